/* Stand-in for a kube-proxy or kubelet binary: it only has to exist as a process whose
 * /proc/<pid>/comm, cmdline, environ, root and network namespace look like the real one's.
 * It takes any flags, does nothing, and exits on SIGTERM. */
#include <signal.h>
#include <unistd.h>
static void bye(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, bye);
    for (;;) pause();
}
