/*
 * echo_server NAME PORT
 *
 * Publishes NAME (registered to this host's identity) for service PORT and echoes every byte
 * of each session back to its sender, one session after the other. Prints one line per session
 * with the peer's name and GUID. Runs until SIGINT or SIGTERM, then closes the listener and
 * exits 0. (A server keeps running after its last reply: the library's engine is a thread of
 * this process and finishes delivering the reply only while the process lives.)
 */
#include <namesock.h>

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
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME PORT\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    long port = strtol(argv[2], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "echo_server: bad port %s\n", argv[2]);
        return 2;
    }
    if (setup_signals() < 0) {
        perror("echo_server: signals");
        return 1;
    }

    int lfd = ns_listen(name, (uint16_t)port, NS_TCP);
    if (lfd < 0) {
        fprintf(stderr, "echo_server: ns_listen %s:%ld: %s\n", name, port, ns_strerror(errno));
        return 1;
    }
    /* Non-blocking: a connection that turns out not to be a session never blocks the loop. */
    if (fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK) < 0) {
        perror("echo_server: fcntl");
        ns_close(lfd);
        return 1;
    }
    char guid[NS_GUID_LEN];
    if (ns_self_guid(guid, sizeof guid) < 0) {
        fprintf(stderr, "echo_server: ns_self_guid: %s\n", ns_strerror(errno));
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
                perror("echo_server: poll");
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
            fprintf(stderr, "echo_server: ns_accept: %s\n", ns_strerror(errno));
            rc = 1;
            break;
        }
        printf("session from %s %s\n", peer_name[0] ? peer_name : "-", peer_guid);
        fflush(stdout);
        if (echo(fd) < 0)
            fprintf(stderr, "echo_server: session: %s\n", strerror(errno));
        close(fd);
    }
    if (ns_close(lfd) < 0) {
        fprintf(stderr, "echo_server: ns_close: %s\n", ns_strerror(errno));
        rc = 1;
    }
    close(wake_pipe[0]);
    close(wake_pipe[1]);
    return rc;
}
