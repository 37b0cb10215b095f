/*
 * echo_server NAME PORT [SESSIONS]
 *
 * Publishes NAME (registered to this host's identity) for service PORT and echoes every byte
 * of each session back to its sender. Prints one line per session with the peer's name and
 * GUID. Serves SESSIONS sessions one after the other (default: forever), then closes the
 * listener and exits 0.
 */
#include <namesock.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int echo(int fd)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -1;
            }
            off += w;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s NAME PORT [SESSIONS]\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    long port = strtol(argv[2], NULL, 10);
    long sessions = argc == 4 ? strtol(argv[3], NULL, 10) : -1;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "echo_server: bad port %s\n", argv[2]);
        return 2;
    }

    int lfd = ns_listen(name, (uint16_t)port, NS_TCP);
    if (lfd < 0) {
        fprintf(stderr, "echo_server: ns_listen %s:%ld: %s\n", name, port, ns_strerror(errno));
        return 1;
    }
    char guid[NS_GUID_LEN];
    if (ns_self_guid(guid, sizeof guid) < 0) {
        fprintf(stderr, "echo_server: ns_self_guid: %s\n", ns_strerror(errno));
        return 1;
    }
    printf("listening %s %s %ld\n", name, guid, port);
    fflush(stdout);

    for (long served = 0; sessions < 0 || served < sessions; served++) {
        char peer_name[NS_NAME_LEN];
        char peer_guid[NS_GUID_LEN];
        int fd = ns_accept(lfd, peer_name, sizeof peer_name, peer_guid, sizeof peer_guid);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                served--;
                continue;
            }
            fprintf(stderr, "echo_server: ns_accept: %s\n", ns_strerror(errno));
            ns_close(lfd);
            return 1;
        }
        printf("session from %s %s\n", peer_name[0] ? peer_name : "-", peer_guid);
        fflush(stdout);
        if (echo(fd) < 0)
            fprintf(stderr, "echo_server: session: %s\n", strerror(errno));
        close(fd);
    }
    if (ns_close(lfd) < 0) {
        fprintf(stderr, "echo_server: ns_close: %s\n", ns_strerror(errno));
        return 1;
    }
    return 0;
}
