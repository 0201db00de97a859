/* `tern run`: the command line, turned into struct run_options for the application
 * (cli_app.c), which builds the VM and runs it on the main thread's libuv loop until the guest
 * ends it or a signal arrives. */
#include "cli/cli.h"

#include "boot/boot_protocol.h"
#include "boot/boot_load.h"
#include "cli/cli_app.h"
#include "err/err.h"
#include "hyperv_cpuid/hyperv_cpuid.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_DEFAULT_MEM (256ull << 20)

static const char run_usage[] =
    "Usage: tern run --kernel FILE [OPTIONS]\n"
    "       tern run --incoming file:PATH|tcp:ADDR:PORT [OPTIONS]\n"
    "Run a guest on /dev/kvm until it ends.\n"
    "\n"
    "  -k, --kernel FILE      a Linux bzImage (64-bit boot protocol 2.06+), or an ELF64\n"
    "                         payload for tern's direct boot (see README)\n"
    "  -r, --initrd FILE      initramfs for a bzImage, placed high in RAM below 4 GiB\n"
    "  -i, --incoming URI     restore the VM from a snapshot (file:PATH), or listen on\n"
    "                         tcp:ADDR:PORT for one live migration and run it once it\n"
    "                         arrives (port 0: any free port, printed); the stream gives\n"
    "                         RAM size and vCPUs (--mem/--cpus, if given, must match)\n"
    "      --incoming-idle-timeout SECONDS\n"
    "                         give up a migration whose source sends nothing for this long\n"
    "                         (default 30)\n"
    "  -p, --paused           with --incoming file:, stay paused until a resume command\n"
    "  -A, --api-socket PATH  serve the JSON control socket at PATH (mode 0600)\n"
    "  -m, --mem SIZE         guest RAM: 64M, 1G, 512K or bytes (default 256M)\n"
    "  -c, --cpus N           vCPUs, 1-64 (default 1)\n"
    "  -a, --cmdline STRING   a bzImage's command line (default\n"
    "                         \"" BOOT_LINUX_DEFAULT_CMDLINE "\"), or a payload's, in\n"
    "                         its boot-info block (default empty)\n"
    "  -s, --serial WHERE     COM1 goes to stdio (default), file:PATH or none\n"
    "      --nested           expose VMX: the guest may run its own guests (needs\n"
    "                         kvm_intel nested=1); their state travels with the VM\n"
    "      --hyperv[=LIST]    a Hyper-V face (\"Microsoft Hv\" CPUID leaves; KVM's own\n"
    "                         move to 0x40000100) with the named enlightenments,\n"
    "                         comma-separated (alone: windows):\n"
    "                           relaxed   no watchdog timeouts when descheduled\n"
    "                           vapic     APIC access by MSR, the VP assist page\n"
    "                           vpindex   the VP index MSR\n"
    "                           runtime   the VP run time MSR\n"
    "                           time      reference counter and TSC page\n"
    "                           synic     synthetic interrupt controller (vpindex)\n"
    "                           stimer    synthetic timers (synic, time)\n"
    "                           stimer-direct  timers without SynIC messages (stimer)\n"
    "                           frequencies    TSC and APIC frequency MSRs\n"
    "                           reenlightenment  TSC change notification\n"
    "                           tlbflush  remote TLB flush hypercalls (vpindex)\n"
    "                           ipi       IPI hypercalls (vpindex)\n"
    "                           evmcs     enlightened VMCS v1 (vapic; --nested)\n"
    "                           windows   preset: all but stimer-direct and evmcs\n"
    "      --hide-kvm         no KVM CPUID leaves: the guest sees only Hyper-V (a Linux\n"
    "                         guest takes the Hyper-V path, and its KVM eVMCS)\n"
    "      --hide-cap CAP     behave as if the host's KVM lacked CAP, to try streams\n"
    "                         against older hosts: nested-state (KVM_CAP_NESTED_STATE),\n"
    "                         evmcs (KVM_CAP_HYPERV_ENLIGHTENED_VMCS), synic\n"
    "                         (KVM_CAP_HYPERV_SYNIC2) or vmx-controls (no secondary\n"
    "                         VMX controls); repeatable\n"
    "      --disk path=FILE[,readonly=on][,serial=ID][,cache=none|writeback]\n"
    "                         a virtio-blk disk on a raw image (size a multiple of 512),\n"
    "                         locked against other terns; cache=none is O_DIRECT;\n"
    "                         repeatable (8 at most). With --incoming the stream names\n"
    "                         the images; --disk there gives other paths, one per disk\n"
    "      --net tap=IFNAME[,mac=MAC] | fd=N[,mac=MAC]\n"
    "                         a virtio-net device on an existing TAP (or the open TAP fd\n"
    "                         N an orchestrator passed, with IFF_VNET_HDR); repeatable\n"
    "                         (4 at most). With --incoming, one per device of the stream\n"
    "      --thp on|off       guest RAM on transparent huge pages (default on; dirty\n"
    "                         logging still tracks 4 KiB pages)\n"
    "      --tls-creds DIR    with --incoming tcp:, take only TLS 1.3 migrations whose\n"
    "                         source certificate DIR/ca-cert.pem signed; this side\n"
    "                         shows DIR/server-cert.pem and DIR/server-key.pem\n"
    "      --tls-psk FILE     with --incoming tcp:, take only TLS 1.3 migrations with a\n"
    "                         key from FILE (lines identity:hexkey, as psktool writes)\n"
    "      --tls-names LIST   with --tls-creds, the source's certificate must name one\n"
    "                         of these (comma-separated DNS names or addresses)\n"
    "  -h, --help             show this help\n"
    "\n"
    "Exit status: the guest's exit code; 0 after a guest reset or power-off; 2 for errors\n"
    "and fatal guest exits (triple fault, KVM internal error, failed VM entry); 128+N when\n"
    "stopped by signal N.\n";

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

static const struct option run_long_options[] = {
    {"kernel", required_argument, NULL, 'k'},
    {"initrd", required_argument, NULL, 'r'},
    {"mem", required_argument, NULL, 'm'},
    {"cpus", required_argument, NULL, 'c'},
    {"cmdline", required_argument, NULL, 'a'},
    {"serial", required_argument, NULL, 's'},
    {"help", no_argument, NULL, 'h'},
    {"incoming", required_argument, NULL, 'i'},
    {"paused", no_argument, NULL, 'p'},
    {"api-socket", required_argument, NULL, 'A'},
    {"incoming-idle-timeout", required_argument, NULL, 'T'},
    {"nested", no_argument, NULL, 'N'},
    {"hyperv", optional_argument, NULL, 'H'},
    {"hide-cap", required_argument, NULL, 'C'},
    {"hide-kvm", no_argument, NULL, 'V'},
    {"thp", required_argument, NULL, 'P'},
    {"disk", required_argument, NULL, 'D'},
    {"net", required_argument, NULL, 'E'},
    {"tls-creds", required_argument, NULL, 'X'},
    {"tls-psk", required_argument, NULL, 'K'},
    {"tls-names", required_argument, NULL, 'W'},
    {NULL, 0, NULL, 0},
};

/* The CPU options: --nested, --hyperv[=LIST], --hide-kvm, --hide-cap. */
static int run_cpu_option(int opt, struct vm_config *cfg)
{
    switch (opt) {
    case 'N':
        cfg->nested = true;
        return 0;
    case 'H':
        cfg->hyperv = true;
        return optarg ? hyperv_parse(optarg, &cfg->hyperv_set)
                      : (cfg->hyperv_set |= HYPERV_PRESET_WINDOWS, 0);
    case 'V':
        cfg->kvm_hidden = true;
        return 0;
    default: /* 'C' */
        if (!strcmp(optarg, "nested-state"))
            cfg->hidden_caps |= VM_HIDE_NESTED_STATE;
        else if (!strcmp(optarg, "evmcs"))
            cfg->hidden_caps |= VM_HIDE_EVMCS;
        else if (!strcmp(optarg, "synic"))
            cfg->hidden_caps |= VM_HIDE_SYNIC;
        else if (!strcmp(optarg, "vmx-controls"))
            cfg->hidden_caps |= VM_HIDE_VMX_CONTROLS;
        else
            return err_set(-EINVAL,
                           "--hide-cap %s: known are nested-state, evmcs, synic and vmx-controls",
                           optarg);
        return 0;
    }
}

struct run_parse {
    struct run_options *o;
    const char *serial;
};

/* One option of getopt_long's. */
static int run_option(int opt, void *ctx)
{
    struct run_parse *p = ctx;
    struct run_options *o = p->o;
    unsigned long n;
    int rc = 0;
    switch (opt) {
    case 'k':
        o->vm.kernel_path = optarg;
        break;
    case 'r':
        o->vm.initrd_path = optarg;
        break;
    case 'm':
        rc = cli_parse_size("--mem", optarg, &o->vm.mem_size);
        o->mem_given = true;
        break;
    case 'c':
        rc = cli_parse_uint("--cpus", optarg, 1, VM_MAX_CPUS, &n);
        o->vm.cpu_count = (unsigned)n;
        o->cpus_given = true;
        break;
    case 'i':
        o->incoming = optarg;
        break;
    case 'p':
        o->paused = true;
        break;
    case 'A':
        o->api_socket = optarg;
        break;
    case 'T':
        rc = cli_parse_uint("--incoming-idle-timeout", optarg, 1, 86400, &n);
        o->idle_s = (unsigned)n;
        break;
    case 'a':
        o->vm.cmdline = optarg;
        break;
    case 'P':
        if (strcmp(optarg, "on") && strcmp(optarg, "off"))
            rc = err_set(-EINVAL, "--thp: '%s' is not on or off", optarg);
        o->vm.thp_off = !strcmp(optarg, "off");
        break;
    case 'D':
        if (o->vm.disk_count == DEV_MAX_DISKS)
            rc = err_set(-E2BIG, "--disk: at most %u disks", DEV_MAX_DISKS);
        else
            rc = dev_disk_parse(optarg, &o->vm.disks[o->vm.disk_count++]);
        break;
    case 'E':
        if (o->vm.net_count == DEV_MAX_NETS)
            rc = err_set(-E2BIG, "--net: at most %u network devices", DEV_MAX_NETS);
        else
            rc = dev_net_parse(optarg, &o->vm.nets[o->vm.net_count++]);
        break;
    case 'X':
        o->tls.creds_dir = optarg;
        break;
    case 'K':
        o->tls.psk_file = optarg;
        break;
    case 'W':
        o->tls.names = optarg;
        break;
    case 'N':
    case 'H':
    case 'V':
    case 'C':
        rc = run_cpu_option(opt, &o->vm);
        break;
    default: /* 's' */
        p->serial = optarg;
        break;
    }
    return rc;
}

/* The options that exclude or need each other, and the limits no single option knows. */
static int run_check(const struct run_options *o)
{
    const struct vm_config *cfg = &o->vm;
    if (o->incoming && cfg->kernel_path)
        return err_set(-EINVAL, "--kernel and --incoming exclude each other");
    if (o->incoming && cfg->initrd_path)
        return err_set(-EINVAL, "--initrd and --incoming exclude each other");
    if (o->incoming && (cfg->nested || cfg->hyperv || cfg->kvm_hidden))
        return err_set(-EINVAL, "%s and --incoming exclude each other: the stream carries the CPU",
                       cfg->nested   ? "--nested"
                       : cfg->hyperv ? "--hyperv"
                                     : "--hide-kvm");
    int rc = cfg->hyperv ? hyperv_check_needs(cfg->hyperv_set) : 0;
    if (!rc)
        rc = mig_tls_options_check(&o->tls);
    if (rc)
        return rc;
    if (mig_tls_wanted(&o->tls) && !(o->incoming && !strncmp(o->incoming, "tcp:", 4)))
        return err_set(-EINVAL,
                       "%s needs --incoming tcp:ADDR:PORT (a source takes it with "
                       "tern migrate)",
                       o->tls.creds_dir ? "--tls-creds" : "--tls-psk");
    if (!o->incoming && !cfg->kernel_path)
        return err_set(-EINVAL, "--kernel FILE is required (see tern run --help)");
    if (o->paused && (!o->incoming || !strncmp(o->incoming, "tcp:", 4)))
        return err_set(-EINVAL, "--paused needs --incoming file:PATH");
    rc = vm_check_mem_size(cfg->mem_size, "--mem");
    if (rc)
        return rc;
    if (cfg->cmdline && strlen(cfg->cmdline) > BOOT_CMDLINE_MAX)
        return err_set(-E2BIG, "--cmdline is %zu bytes; the limit is %u", strlen(cfg->cmdline),
                       BOOT_CMDLINE_MAX);
    return 0;
}

/* Parses argv into o; 1 when --help was printed. */
static int run_parse(int argc, char **argv, struct run_options *o, const char **serial)
{
    struct run_parse p = {.o = o, .serial = *serial};
    int rc = cli_getopt(argc, argv, "run", ":k:r:m:c:a:s:hi:pA:", run_long_options, run_usage,
                        run_option, &p);
    *serial = p.serial;
    if (rc)
        return rc;
    if (optind < argc)
        return err_set(-EINVAL, "unexpected argument '%s' (see tern run --help)", argv[optind]);
    return run_check(o);
}

int cli_run(int argc, char **argv)
{
    struct run_options o = {.vm = {.mem_size = RUN_DEFAULT_MEM, .cpu_count = 1},
                            .idle_s = MIG_DEFAULT_IDLE_MS / 1000};
    const char *serial = "stdio";
    int rc = run_parse(argc, argv, &o, &serial);
    if (rc == 1)
        return 0;
    if (!rc)
        rc = run_open_serial(serial, &o.vm.serial_out_fd, &o.vm.serial_in_fd);
    if (rc) {
        fprintf(stderr, "tern: %s\n", err_msg());
        return CLI_EXIT_ERROR;
    }
    int status = cli_app_run(&o);
    if (o.vm.serial_out_fd > STDERR_FILENO)
        close(o.vm.serial_out_fd);
    return status;
}
