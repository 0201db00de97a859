/* `tern run`: build a VM from the command line and run it on the main thread's libuv loop until
 * the guest ends it or a signal arrives. */
#include "cli/cli.h"

#include "boot/boot_protocol.h"
#include "err/err.h"
#include "vm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_DEFAULT_MEM (256ull << 20)

static const char run_usage[] =
    "Usage: tern run --kernel FILE [OPTIONS]\n"
    "Run a guest on /dev/kvm until it ends.\n"
    "\n"
    "  -k, --kernel FILE      ELF64 payload to boot directly (see README: boot protocol)\n"
    "  -m, --mem SIZE         guest RAM: 64M, 1G, 512K or bytes (default 256M)\n"
    "  -c, --cpus N           vCPUs, 1-64 (default 1)\n"
    "  -a, --cmdline STRING   command line handed to the payload in the boot-info block\n"
    "  -s, --serial WHERE     COM1 goes to stdio (default), file:PATH or none\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: the guest's exit code; 0 after a guest reset; 2 for errors and fatal guest\n"
    "exits (triple fault, KVM internal error, failed VM entry); 128+N when stopped by signal N.\n";

struct run_state {
    uv_loop_t loop;
    struct vm *vm;
    uv_signal_t sigint, sigterm;
    int exit_status;
    bool ending;
};

static void run_finish(struct run_state *st)
{
    if (st->ending)
        return;
    st->ending = true;
    vm_stop(st->vm);
    uv_signal_stop(&st->sigint);
    uv_signal_stop(&st->sigterm);
    uv_stop(&st->loop);
}

static void run_on_vm_end(struct vm *vm, void *opaque)
{
    struct run_state *st = opaque;
    struct vm_end end = vm_end_state(vm);
    switch (end.kind) {
    case VM_END_EXIT_CODE:
        if (end.code > 255) {
            fprintf(stderr, "tern: guest exit code %u does not fit an exit status; exiting 255\n",
                    end.code);
            st->exit_status = 255;
        } else {
            st->exit_status = (int)end.code;
        }
        break;
    case VM_END_RESET:
        fprintf(stderr, "tern: VM ended: %s\n", end.message);
        st->exit_status = 0;
        break;
    case VM_END_FAULT:
    default:
        fprintf(stderr, "tern: %s\n", end.message);
        st->exit_status = CLI_EXIT_ERROR;
        break;
    }
    run_finish(st);
}

static void run_on_signal(uv_signal_t *h, int signum)
{
    struct run_state *st = h->data;
    fprintf(stderr, "tern: %s: stopping the VM\n", strsignal(signum));
    st->exit_status = 128 + signum;
    run_finish(st);
}

static int run_open_serial(const char *spec, int *out_fd, int *in_fd)
{
    if (!strcmp(spec, "stdio")) {
        *out_fd = STDOUT_FILENO;
        *in_fd = STDIN_FILENO;
        return 0;
    }
    if (!strcmp(spec, "none")) {
        *out_fd = *in_fd = -1;
        return 0;
    }
    if (!strncmp(spec, "file:", 5) && spec[5]) {
        int fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return err_sys(-errno, "--serial %s: cannot open", spec);
        *out_fd = fd;
        *in_fd = -1;
        return 0;
    }
    return err_set(-EINVAL, "--serial: '%s' is not stdio, file:PATH or none", spec);
}

static void run_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int cli_run(int argc, char **argv)
{
    static const struct option options[] = {
        {"kernel", required_argument, NULL, 'k'},
        {"mem", required_argument, NULL, 'm'},
        {"cpus", required_argument, NULL, 'c'},
        {"cmdline", required_argument, NULL, 'a'},
        {"serial", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct vm_config cfg = {.mem_size = RUN_DEFAULT_MEM, .cpu_count = 1};
    const char *serial = "stdio";
    unsigned long cpus;
    int opt, rc = 0;

    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":k:m:c:a:s:h", options, NULL)) != -1) {
        switch (opt) {
        case 'k':
            cfg.kernel_path = optarg;
            break;
        case 'm':
            rc = cli_parse_size("--mem", optarg, &cfg.mem_size);
            break;
        case 'c':
            rc = cli_parse_uint("--cpus", optarg, 1, VM_MAX_CPUS, &cpus);
            cfg.cpu_count = (unsigned)cpus;
            break;
        case 'a':
            cfg.cmdline = optarg;
            break;
        case 's':
            serial = optarg;
            break;
        case 'h':
            fputs(run_usage, stdout);
            return 0;
        case ':':
            rc = err_set(-EINVAL, "%s needs a value (see tern run --help)", argv[optind - 1]);
            break;
        default:
            rc = err_set(-EINVAL, "unknown option '%s' (see tern run --help)", argv[optind - 1]);
            break;
        }
        if (rc)
            goto fail;
    }
    if (optind < argc) {
        rc = err_set(-EINVAL, "unexpected argument '%s' (see tern run --help)", argv[optind]);
        goto fail;
    }
    if (!cfg.kernel_path) {
        rc = err_set(-EINVAL, "--kernel FILE is required (see tern run --help)");
        goto fail;
    }
    uint64_t host_ram = vm_host_ram_bytes();
    if (host_ram && cfg.mem_size > host_ram) {
        rc =
            err_set(-EINVAL, "--mem: %llu MiB exceeds the host's %llu MiB of RAM",
                    (unsigned long long)(cfg.mem_size >> 20), (unsigned long long)(host_ram >> 20));
        goto fail;
    }
    if (cfg.cmdline && strlen(cfg.cmdline) > BOOT_CMDLINE_MAX) {
        rc = err_set(-E2BIG, "--cmdline is %zu bytes; the limit is %u", strlen(cfg.cmdline),
                     BOOT_CMDLINE_MAX);
        goto fail;
    }
    rc = run_open_serial(serial, &cfg.serial_out_fd, &cfg.serial_in_fd);
    if (rc)
        goto fail;

    signal(SIGPIPE, SIG_IGN);
    struct run_state st = {.exit_status = 0};
    uv_loop_init(&st.loop);
    rc = vm_create(&st.loop, &cfg, run_on_vm_end, &st, &st.vm);
    if (!rc) {
        uv_signal_init(&st.loop, &st.sigint);
        uv_signal_init(&st.loop, &st.sigterm);
        st.sigint.data = st.sigterm.data = &st;
        uv_signal_start(&st.sigint, run_on_signal, SIGINT);
        uv_signal_start(&st.sigterm, run_on_signal, SIGTERM);
        rc = vm_start(st.vm);
        if (!rc)
            uv_run(&st.loop, UV_RUN_DEFAULT);
        else
            vm_stop(st.vm);
        vm_close(st.vm);
    }
    uv_walk(&st.loop, run_close_walk, NULL);
    uv_run(&st.loop, UV_RUN_DEFAULT);
    uv_loop_close(&st.loop);
    if (cfg.serial_out_fd > STDERR_FILENO)
        close(cfg.serial_out_fd);
    if (rc)
        goto fail;
    return st.exit_status;

fail:
    fprintf(stderr, "tern: %s\n", err_msg());
    return CLI_EXIT_ERROR;
}
