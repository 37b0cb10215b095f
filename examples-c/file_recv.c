/*
 * file_recv NAME PORT [OUTFILE]
 *
 * Publishes NAME for service PORT and receives files, one session after the other: stores what
 * a session sends in OUTFILE (rewritten for each session; without OUTFILE only hashes it), and
 * when the sender half-closes, answers with the SHA-256 of the bytes (64 hex digits and a
 * newline). Prints
 *     listening NAME GUID PORT
 *     session from PEER_NAME PEER_GUID
 *     received BYTES bytes sha256 HEX
 * Runs until SIGINT or SIGTERM, then closes the listener and exits 0. (A server keeps running
 * after its last reply: the library's engine is a thread of this process and finishes
 * delivering the reply only while the process lives.)
 */
#include <namesock.h>

#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SIGINT/SIGTERM end the server: the handler wakes the poll loop through a pipe. */
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    ssize_t ignored = write(wake_pipe[1], "x", 1);
    (void)ignored;
    errno = saved;
}

static int setup_signals(void)
{
    if (pipe(wake_pipe) < 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -1;
    return 0;
}

/*
 * Waits until a session is ready on lfd (1) or a signal asked to stop (0); -1 on error.
 * poll reports the listener readable when the engine has delivered a session.
 */
static int wait_session(int lfd)
{
    struct pollfd fds[2] = {{.fd = lfd, .events = POLLIN}, {.fd = wake_pipe[0], .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (fds[1].revents)
            return 0;
        if (fds[0].revents)
            return 1;
    }
}

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

/* Receives one file on fd into out_path (NULL: only hash) and answers with its digest. */
static int receive(int fd, const char *out_path)
{
    int out = -1;
    if (out_path != NULL) {
        out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0) {
            fprintf(stderr, "file_recv: %s: %s\n", out_path, strerror(errno));
            return -1;
        }
    }
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
            goto fail;
        }
        sha256_update(&hash, buf, (size_t)n);
        if (out >= 0 && write_all(out, buf, (size_t)n) < 0) {
            fprintf(stderr, "file_recv: write %s: %s\n", out_path, strerror(errno));
            goto fail;
        }
        total += (unsigned long long)n;
    }
    if (out >= 0 && close(out) < 0) {
        out = -1;
        fprintf(stderr, "file_recv: close %s: %s\n", out_path, strerror(errno));
        goto fail;
    }
    out = -1;
    char hex[SHA256_HEX_LEN + 1];
    sha256_final_hex(&hash, hex);
    printf("received %llu bytes sha256 %s\n", total, hex);
    fflush(stdout);
    strcat(hex, "\n");
    if (write_all(fd, hex, strlen(hex)) < 0) {
        fprintf(stderr, "file_recv: write digest: %s\n", strerror(errno));
        return -1;
    }
    return 0;

fail:
    if (out >= 0)
        close(out);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s NAME PORT [OUTFILE]\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    long port = strtol(argv[2], NULL, 10);
    const char *out_path = argc == 4 ? argv[3] : NULL;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "file_recv: bad port %s\n", argv[2]);
        return 2;
    }
    if (setup_signals() < 0) {
        perror("file_recv: signals");
        return 1;
    }

    int lfd = ns_listen(name, (uint16_t)port, NS_TCP);
    if (lfd < 0) {
        fprintf(stderr, "file_recv: ns_listen %s:%ld: %s\n", name, port, ns_strerror(errno));
        return 1;
    }
    /* Non-blocking: a connection that turns out not to be a session never blocks the loop. */
    if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) < 0) {
        perror("file_recv: fcntl");
        ns_close(lfd);
        return 1;
    }
    char guid[NS_GUID_LEN];
    if (ns_self_guid(guid, sizeof guid) < 0) {
        fprintf(stderr, "file_recv: ns_self_guid: %s\n", ns_strerror(errno));
        ns_close(lfd);
        return 1;
    }
    printf("listening %s %s %ld\n", name, guid, port);
    fflush(stdout);

    int rc = 0;
    for (;;) {
        int ready = wait_session(lfd);
        if (ready <= 0) {
            if (ready < 0) {
                perror("file_recv: poll");
                rc = 1;
            }
            break;
        }
        char peer_name[NS_NAME_LEN];
        char peer_guid[NS_GUID_LEN];
        int fd = ns_accept(lfd, peer_name, sizeof peer_name, peer_guid, sizeof peer_guid);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                continue;
            fprintf(stderr, "file_recv: ns_accept: %s\n", ns_strerror(errno));
            rc = 1;
            break;
        }
        printf("session from %s %s\n", peer_name[0] ? peer_name : "-", peer_guid);
        fflush(stdout);
        if (receive(fd, out_path) < 0)
            rc = 1;
        close(fd);
    }
    if (ns_close(lfd) < 0) {
        fprintf(stderr, "file_recv: ns_close: %s\n", ns_strerror(errno));
        rc = 1;
    }
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    return rc;
}
