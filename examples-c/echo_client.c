/*
 * echo_client NAME PORT MESSAGE
 *
 * Opens a session to NAME:PORT, sends MESSAGE, half-closes, reads the echo until the server
 * closes, prints it, and exits 0 only if it equals MESSAGE.
 */
#include <namesock.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s NAME PORT MESSAGE\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    long port = strtol(argv[2], NULL, 10);
    const char *msg = argv[3];
    size_t len = strlen(msg);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "echo_client: bad port %s\n", argv[2]);
        return 2;
    }

    int fd = ns_open(NULL, name, (uint16_t)port, NS_TCP);
    if (fd < 0) {
        fprintf(stderr, "echo_client: ns_open %s:%ld: %s\n", name, port, ns_strerror(errno));
        return 1;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, msg + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "echo_client: write: %s\n", strerror(errno));
            close(fd);
            return 1;
        }
        off += (size_t)w;
    }
    if (shutdown(fd, SHUT_WR) < 0) {
        fprintf(stderr, "echo_client: shutdown: %s\n", strerror(errno));
        close(fd);
        return 1;
    }

    char *back = malloc(len + 1);
    if (back == NULL) {
        close(fd);
        return 1;
    }
    size_t got = 0;
    int ok = 1;
    for (;;) {
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "echo_client: read: %s\n", strerror(errno));
            ok = 0;
            break;
        }
        if (got + (size_t)n > len) {
            fprintf(stderr, "echo_client: more bytes came back than were sent\n");
            ok = 0;
            break;
        }
        memcpy(back + got, buf, (size_t)n);
        got += (size_t)n;
    }
    close(fd);
    back[got] = '\0';
    printf("echo %s\n", back);
    if (ok && (got != len || memcmp(back, msg, len) != 0)) {
        fprintf(stderr, "echo_client: the echo differs from the message\n");
        ok = 0;
    }
    free(back);
    return ok ? 0 : 1;
}
