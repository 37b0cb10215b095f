/*
 * file_recv NAME PORT [OUTFILE]
 *
 * Publishes NAME for service PORT, accepts one session, stores what it receives in OUTFILE
 * (or only hashes it), and when the sender half-closes, answers with the SHA-256 of the bytes
 * (64 hex digits and a newline). Prints
 *     listening NAME GUID PORT
 *     session from PEER_NAME PEER_GUID
 *     received BYTES bytes sha256 HEX
 */
#include <namesock.h>

#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s NAME PORT [OUTFILE]\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "file_recv: bad port %s\n", argv[2]);
        return 2;
    }
    int out = -1;
    if (argc == 4) {
        out = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
            fprintf(stderr, "file_recv: %s: %s\n", argv[3], strerror(errno));
            return 1;
        }
    }

    int lfd = ns_listen(name, (uint16_t)port, NS_TCP);
    if (lfd < 0) {
        fprintf(stderr, "file_recv: ns_listen %s:%ld: %s\n", name, port, ns_strerror(errno));
        if (out >= 0)
            close(out);
        return 1;
    }
    char guid[NS_GUID_LEN];
    if (ns_self_guid(guid, sizeof guid) < 0) {
        fprintf(stderr, "file_recv: ns_self_guid: %s\n", ns_strerror(errno));
        goto fail_listener;
    }
    printf("listening %s %s %ld\n", name, guid, port);
    fflush(stdout);

    char peer_name[NS_NAME_LEN];
    char peer_guid[NS_GUID_LEN];
    int fd;
    do
        fd = ns_accept(lfd, peer_name, sizeof peer_name, peer_guid, sizeof peer_guid);
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (fd < 0) {
        fprintf(stderr, "file_recv: ns_accept: %s\n", ns_strerror(errno));
        goto fail_listener;
    }
    printf("session from %s %s\n", peer_name[0] ? peer_name : "-", peer_guid);
    fflush(stdout);

    static char buf[1 << 16];
    struct sha256 hash;
    sha256_init(&hash);
    unsigned long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "file_recv: read: %s\n", strerror(errno));
            close(fd);
            goto fail_listener;
        }
        sha256_update(&hash, buf, (size_t)n);
        if (out >= 0 && write_all(out, buf, (size_t)n) < 0) {
            fprintf(stderr, "file_recv: write %s: %s\n", argv[3], strerror(errno));
            close(fd);
            goto fail_listener;
        }
        total += (unsigned long long)n;
    }
    char hex[SHA256_HEX_LEN + 1];
    sha256_final_hex(&hash, hex);
    printf("received %llu bytes sha256 %s\n", total, hex);
    fflush(stdout);
    strcat(hex, "\n");
    int rc = 0;
    if (write_all(fd, hex, strlen(hex)) < 0) {
        fprintf(stderr, "file_recv: write digest: %s\n", strerror(errno));
        rc = 1;
    }
    close(fd);
    if (ns_close(lfd) < 0) {
        fprintf(stderr, "file_recv: ns_close: %s\n", ns_strerror(errno));
        rc = 1;
    }
    if (out >= 0 && close(out) < 0) {
        fprintf(stderr, "file_recv: close %s: %s\n", argv[3], strerror(errno));
        rc = 1;
    }
    return rc;

fail_listener:
    ns_close(lfd);
    if (out >= 0)
        close(out);
    return 1;
}
