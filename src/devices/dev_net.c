/* --net: parsing, and the TAP device behind it (dev_net.h). */
#include "devices/dev_net.h"

#include "err/err.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int dev_net_parse_mac(const char *t, uint8_t mac[6])
{
    if (strlen(t) != 17)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        int hi = hexdig(t[3 * i]), lo = hexdig(t[3 * i + 1]);
        if (hi < 0 || lo < 0 || (i < 5 && t[3 * i + 2] != ':'))
            return -EINVAL;
        mac[i] = (uint8_t)(hi << 4 | lo);
    }
    if (mac[0] & 1) /* a group address is no interface's */
        return -EINVAL;
    return 0;
}

static int dev_net_field(struct dev_net *n, const char *f, size_t len, bool *where)
{
    const char *eq = memchr(f, '=', len);
    if (!eq)
        return err_set(-EINVAL, "--net: '%.*s' is not key=value", (int)len, f);
    size_t klen = (size_t)(eq - f), vlen = len - klen - 1;
    const char *v = eq + 1;
    char val[64];
    if (vlen >= sizeof(val))
        return err_set(-EINVAL, "--net: %.*s is too long", (int)klen, f);
    memcpy(val, v, vlen);
    val[vlen] = 0;
    if (klen == 3 && !strncmp(f, "tap", 3)) {
        if (vlen == 0 || vlen >= DEV_NET_IFNAME_MAX)
            return err_set(-EINVAL, "--net: tap=%s: an interface name is 1 to %u characters", val,
                           DEV_NET_IFNAME_MAX - 1);
        strcpy(n->ifname, val);
        *where = true;
    } else if (klen == 2 && !strncmp(f, "fd", 2)) {
        char *end;
        long fd = strtol(val, &end, 10);
        if (!vlen || *end || fd < 0 || fd > 65535)
            return err_set(-EINVAL, "--net: fd=%s is not a file descriptor number", val);
        n->fd = (int)fd;
        *where = true;
    } else if (klen == 3 && !strncmp(f, "mac", 3)) {
        if (dev_net_parse_mac(val, n->mac))
            return err_set(-EINVAL, "--net: mac=%s is not a unicast MAC like 52:54:00:12:34:56",
                           val);
        n->mac_given = true;
    } else {
        return err_set(-EINVAL, "--net: unknown key '%.*s' (tap, fd, mac)", (int)klen, f);
    }
    return 0;
}

int dev_net_parse(const char *spec, struct dev_net *out)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    bool where = false;
    for (const char *p = spec; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        bool this_where = false;
        int rc = dev_net_field(out, p, n, &this_where);
        if (rc)
            return rc;
        if (this_where && where)
            return err_set(-EINVAL, "--net: give tap= or fd=, once");
        where |= this_where;
        p += n + (comma ? 1 : 0);
    }
    if (!where)
        return err_set(-EINVAL, "--net: tap=IFNAME or fd=N is missing");
    return 0;
}

int dev_net_open(struct dev_net *n, int *fd_out)
{
    struct ifreq ifr = {0};
    if (n->fd >= 0) {
        if (ioctl(n->fd, TUNGETIFF, &ifr))
            return err_set(-EINVAL, "--net fd=%d: not a TAP device (TUNGETIFF: %s)", n->fd,
                           strerror(errno));
        if (!(ifr.ifr_flags & IFF_TAP) || (ifr.ifr_flags & IFF_NO_PI) == 0 ||
            !(ifr.ifr_flags & IFF_VNET_HDR))
            return err_set(-EINVAL,
                           "--net fd=%d: %s is not a TAP opened with IFF_NO_PI and "
                           "IFF_VNET_HDR",
                           n->fd, ifr.ifr_name);
        snprintf(n->ifname, sizeof(n->ifname), "%s", ifr.ifr_name);
        int fl = fcntl(n->fd, F_GETFL);
        if (fl < 0 || fcntl(n->fd, F_SETFL, fl | O_NONBLOCK))
            return err_sys(-errno, "--net fd=%d: fcntl", n->fd);
        *fd_out = n->fd;
        return 0;
    }
    /* tern attaches to a TAP that exists (ip tuntap add NAME mode tap); it makes none. */
    if (!if_nametoindex(n->ifname))
        return err_set(-ENODEV,
                       "--net tap=%s: no such interface (make it with ip tuntap add %s "
                       "mode tap)",
                       n->ifname, n->ifname);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return err_sys(-errno, "--net tap=%s: cannot open /dev/net/tun", n->ifname);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", n->ifname);
    if (ioctl(fd, TUNSETIFF, &ifr)) {
        int e = errno;
        close(fd);
        if (e == EBUSY)
            return err_set(-EBUSY,
                           "--net tap=%s: the interface is busy (another process has it "
                           "open)",
                           n->ifname);
        if (e == EINVAL)
            return err_set(-EINVAL,
                           "--net tap=%s: the interface exists and is not a TAP with a "
                           "virtio-net header",
                           n->ifname);
        if (e == EPERM)
            return err_set(-EPERM,
                           "--net tap=%s: no such TAP, and no permission to make one "
                           "(CAP_NET_ADMIN)",
                           n->ifname);
        return err_set(-e, "--net tap=%s: TUNSETIFF: %s", n->ifname, strerror(e));
    }
    *fd_out = fd;
    return 0;
}
