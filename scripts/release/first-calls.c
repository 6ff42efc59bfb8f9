// first-calls: run a program and write the name of every function it calls, once, in the order of the first call.
//
//   first-calls FUNCTIONS OUT -- PROGRAM [ARGS...]
//
// FUNCTIONS lists the program's functions as "<hex address> <symbol>" lines (the addresses of the ELF file, e.g.
// from `readelf -sW`). The program runs under ptrace: before it starts, an int3 replaces the first byte of every
// listed function; the first call of a function traps, its name is appended to OUT (flushed at once, so OUT is
// complete even if the program is killed), its byte is put back and the call goes on. Each function traps once, so
// the program runs at nearly full speed after its start-up. All threads are followed; other signals pass through.
//
// scripts/release/symbol-order.sh uses it to record what the server touches at start-up and on its first requests,
// for the linker's --symbol-ordering-file (decision 0015). Linux x86-64 only.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    unsigned long address;
    char *name;
    unsigned char original;
    int called;
} Function;

static Function *functions;
static size_t count;

static int by_address(const void *a, const void *b) {
    unsigned long x = ((const Function *)a)->address, y = ((const Function *)b)->address;
    return x < y ? -1 : x > y;
}

static void die(const char *what) {
    fprintf(stderr, "first-calls: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void read_functions(const char *path) {
    FILE *file = fopen(path, "r");
    if (!file) die(path);
    size_t capacity = 1 << 16;
    functions = malloc(capacity * sizeof *functions);
    char line[16384];
    while (fgets(line, sizeof line, file)) {
        char *space = strchr(line, ' ');
        if (!space) continue;
        *space = 0;
        char *name = space + 1;
        name[strcspn(name, "\n")] = 0;
        if (count == capacity) functions = realloc(functions, (capacity *= 2) * sizeof *functions);
        functions[count++] = (Function){ strtoul(line, NULL, 16), strdup(name), 0, 0 };
    }
    fclose(file);
    qsort(functions, count, sizeof *functions, by_address);
    size_t unique = 0;  // aliases share an address (and a section): keep one name
    for (size_t i = 0; i < count; i++) {
        if (unique && functions[unique - 1].address == functions[i].address) continue;
        functions[unique++] = functions[i];
    }
    count = unique;
}

// The address the ELF file's address 0 is loaded at (a PIE): the start of the program's first mapping.
static unsigned long load_base(pid_t pid, const char *program) {
    char path[64], real[PATH_MAX], line[PATH_MAX + 256];
    if (!realpath(program, real)) die(program);
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *maps = fopen(path, "r");
    if (!maps) die(path);
    unsigned long base = 0;
    while (!base && fgets(line, sizeof line, maps)) {
        line[strcspn(line, "\n")] = 0;
        size_t n = strlen(line), m = strlen(real);
        if (n >= m && strcmp(line + n - m, real) == 0) base = strtoul(line, NULL, 16);
    }
    fclose(maps);
    if (!base) { fprintf(stderr, "first-calls: %s is not mapped in %d\n", real, pid); exit(1); }
    return base;
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: first-calls FUNCTIONS OUT -- PROGRAM [ARGS...]\n");
        return 2;
    }
    read_functions(argv[1]);
    FILE *out = fopen(argv[2], "w");
    if (!out) die(argv[2]);

    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0) die("ptrace (not allowed here?)");  // never run untraced
        execv(argv[4], argv + 4);
        die(argv[4]);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFSTOPPED(status)) die("exec");  // stopped after execv
    ptrace(PTRACE_SETOPTIONS, pid, NULL, PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL);

    unsigned long base = load_base(pid, argv[4]);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", pid);
    int memory = open(path, O_RDWR);
    if (memory < 0) die(path);
    const unsigned char int3 = 0xCC;
    for (size_t i = 0; i < count; i++) {
        if (pread(memory, &functions[i].original, 1, base + functions[i].address) != 1) die("read text");
        if (pwrite(memory, &int3, 1, base + functions[i].address) != 1) die("patch text");
    }
    fprintf(stderr, "first-calls: watching %zu functions\n", count);
    ptrace(PTRACE_CONT, pid, NULL, NULL);

    size_t called = 0;
    for (;;) {
        pid_t thread = waitpid(-1, &status, __WALL);
        if (thread < 0) {
            if (errno == EINTR) continue;
            break;  // no traced thread left
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            if (thread == pid) break;
            continue;
        }
        int signal = WSTOPSIG(status);
        if (signal == SIGTRAP && (status >> 16) == PTRACE_EVENT_CLONE) {
            ptrace(PTRACE_CONT, thread, NULL, NULL);
            continue;
        }
        if (signal == SIGTRAP) {
            struct user_regs_struct registers;
            ptrace(PTRACE_GETREGS, thread, NULL, &registers);
            Function key = { .address = registers.rip - 1 - base };
            Function *function = bsearch(&key, functions, count, sizeof *functions, by_address);
            if (function) {  // one of ours (another thread may have trapped on it just before it was restored)
                if (!function->called) {
                    function->called = 1;
                    called++;
                    pwrite(memory, &function->original, 1, base + function->address);
                    fprintf(out, "%s\n", function->name);
                    fflush(out);
                }
                registers.rip -= 1;
                ptrace(PTRACE_SETREGS, thread, NULL, &registers);
                ptrace(PTRACE_CONT, thread, NULL, NULL);
                continue;
            }
        }
        // A new thread's first stop, or a signal of the program's own: pass the latter on.
        ptrace(PTRACE_CONT, thread, NULL, signal == SIGSTOP ? 0 : signal);
    }
    fprintf(stderr, "first-calls: %zu functions called\n", called);
    return 0;
}
