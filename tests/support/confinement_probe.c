/*
 * A probe run inside a TPC by tests/confinement.rs: it tries the system calls a confined
 * container must not make (docker's default seccomp profile blocks them) and prints one line per
 * call, "name=0" when it succeeded or "name=<errno>" when it failed. Built statically by the test
 * (cc -static), so it runs in the busybox fixture image.
 *
 * Usage: probe calls <key description>   (the calls; the key is one the host added to root's
 *                                           user keyring, searched for from inside)
 *        probe forks <n>                   (forks n children that wait; prints how many forked)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long ret) {
    printf("%s=%d\n", name, ret < 0 ? errno : 0);
    fflush(stdout);
}

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return -1;
    int n = write(fd, text, strlen(text));
    close(fd);
    return n < 0 ? -1 : 0;
}

/* In a child: a new user and mount namespace (root mapped to ourselves), then a tmpfs mount.
 * Exits with 0 when the mount worked, else with the errno of the first failure. */
static int userns_mount(void) {
    pid_t pid = fork();
    if (pid == 0) {
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
            _exit(errno);
        char map[64];
        write_file("/proc/self/setgroups", "deny");
        snprintf(map, sizeof map, "0 %u 1", uid);
        if (write_file("/proc/self/uid_map", map) < 0)
            _exit(errno);
        snprintf(map, sizeof map, "0 %u 1", gid);
        if (write_file("/proc/self/gid_map", map) < 0)
            _exit(errno);
        if (mount("none", "/tmp", "tmpfs", 0, "") < 0)
            _exit(errno);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* In a child (the probe itself must stay in its namespaces): unshare a user namespace. */
static int unshare_user(void) {
    pid_t pid = fork();
    if (pid == 0)
        _exit(unshare(CLONE_NEWUSER) < 0 ? errno : 0);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int calls(const char *key) {
    printf("unshare_userns_mount=%d\n", userns_mount());
    printf("unshare_user=%d\n", unshare_user());
    report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0));
    report("keyctl_search_host_key",
           syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, "user", key, 0));
    report("add_key", syscall(SYS_add_key, "user", "tpcm-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_CPU_CLOCK;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    report("perf_event_open", syscall(SYS_perf_event_open, &attr, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, UFFD_USER_MODE_ONLY));
    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, &params));
    /* The query leaves the persona alone; READ_IMPLIES_EXEC would change it. */
    report("personality", syscall(SYS_personality, READ_IMPLIES_EXEC));
    return 0;
}

static int forks(int n) {
    pid_t children[4096];
    int made = 0;
    for (int i = 0; i < n && i < 4096; i++) {
        pid_t pid = fork();
        if (pid < 0)
            break;
        if (pid == 0) {
            pause();
            _exit(0);
        }
        children[made++] = pid;
    }
    printf("forked=%d\n", made);
    fflush(stdout);
    for (int i = 0; i < made; i++) {
        kill(children[i], SIGKILL);
        waitpid(children[i], NULL, 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "calls") == 0)
        return calls(argv[2]);
    if (argc == 3 && strcmp(argv[1], "forks") == 0)
        return forks(atoi(argv[2]));
    fprintf(stderr, "usage: probe calls <key> | probe forks <n>\n");
    return 2;
}
