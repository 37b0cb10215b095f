/*
 * file_send NAME PORT FILE
 *
 * Opens a session to NAME:PORT, sends the contents of FILE, half-closes, then reads the
 * receiver's SHA-256 (64 hex digits and a newline). Prints
 *     sent BYTES bytes in SECONDS s sha256 HEX
 *     peer sha256 HEX
 * and exits 0 only if both digests match.
 */
#include <namesock.h>

#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
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

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s NAME PORT FILE\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "file_send: bad port %s\n", argv[2]);
        return 2;
    }
    int in = open(argv[3], O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        fprintf(stderr, "file_send: %s: %s\n", argv[3], strerror(errno));
        return 1;
    }

    double start = now();
    int fd = ns_open(NULL, name, (uint16_t)port, NS_TCP);
    if (fd < 0) {
        fprintf(stderr, "file_send: ns_open %s:%ld: %s\n", name, port, ns_strerror(errno));
        close(in);
        return 1;
    }

    static char buf[1 << 16];
    struct sha256 hash;
    sha256_init(&hash);
    unsigned long long total = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "file_send: read %s: %s\n", argv[3], strerror(errno));
            goto fail;
        }
        sha256_update(&hash, buf, (size_t)n);
        if (write_all(fd, buf, (size_t)n) < 0) {
            fprintf(stderr, "file_send: write: %s\n", strerror(errno));
            goto fail;
        }
        total += (unsigned long long)n;
    }
    if (shutdown(fd, SHUT_WR) < 0) {
        fprintf(stderr, "file_send: shutdown: %s\n", strerror(errno));
        goto fail;
    }

    char mine[SHA256_HEX_LEN];
    sha256_final_hex(&hash, mine);
    char theirs[SHA256_HEX_LEN + 1];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, theirs + got, sizeof theirs - 1 - got);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "file_send: read digest: %s\n", strerror(errno));
            goto fail;
        }
        got += (size_t)n;
        if (got == sizeof theirs - 1)
            break;
    }
    theirs[got] = '\0';
    if (got > 0 && theirs[got - 1] == '\n')
        theirs[got - 1] = '\0';
    double secs = now() - start;
    close(fd);
    close(in);

    printf("sent %llu bytes in %.3f s sha256 %s\n", total, secs, mine);
    printf("peer sha256 %s\n", theirs);
    if (strcmp(mine, theirs) != 0) {
        fprintf(stderr, "file_send: the receiver's digest differs\n");
        return 1;
    }
    return 0;

fail:
    close(fd);
    close(in);
    return 1;
}
