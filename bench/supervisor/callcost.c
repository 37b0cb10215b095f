/* Per-call cost of the seccomp supervisor (bench/supervisor.sh): a static program timing
 *   getpid N        an untrapped system call (the filter's cost on every call)
 *   connect N       connect + accept + close to a loopback listener (a trapped call that the
 *                   supervisor lets continue: a plain-address connect)
 *   resolve NAME N  getaddrinfo(NAME) (a zone name: answered by the supervisor's DNS stub)
 * and printing nanoseconds per iteration. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: callcost getpid|connect N | resolve NAME N\n");
        return 2;
    }
    const char *what = argv[1];
    long n = atol(argv[argc - 1]);
    double start = now();
    if (!strcmp(what, "getpid")) {
        for (long i = 0; i < n; i++) syscall(39 /* SYS_getpid, uncached */);
    } else if (!strcmp(what, "connect")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        if (bind(l, (struct sockaddr *)&a, len) || listen(l, 16) ||
            getsockname(l, (struct sockaddr *)&a, &len)) {
            perror("listener");
            return 1;
        }
        start = now();
        for (long i = 0; i < n; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, sizeof a)) {
                perror("connect");
                return 1;
            }
            int s = accept(l, NULL, NULL);
            close(c);
            close(s);
        }
    } else if (!strcmp(what, "resolve") && argc == 4) {
        struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        for (long i = 0; i < n; i++) {
            int rc = getaddrinfo(argv[2], "80", &hints, &res);
            if (rc) {
                fprintf(stderr, "getaddrinfo %s: %s\n", argv[2], gai_strerror(rc));
                return 1;
            }
            freeaddrinfo(res);
        }
    } else {
        fprintf(stderr, "unknown: %s\n", what);
        return 2;
    }
    printf("%s %.0f ns per call\n", what, (now() - start) / n);
    return 0;
}
