/* dev_net: a network interface the VM is given (--net tap=IFNAME[,mac=MAC] or --net
 * fd=N[,mac=MAC]), parsed and opened. The TAP is opened (or checked, for an fd an orchestrator
 * handed over) as IFF_TAP | IFF_NO_PI | IFF_VNET_HDR; virtio-net sets its offloads. */
#ifndef TERN_DEV_NET_H
#define TERN_DEV_NET_H

#include <stdbool.h>
#include <stdint.h>

#define DEV_MAX_NETS 4u
#define DEV_NET_IFNAME_MAX 16u /* IFNAMSIZ */

struct dev_net {
    char ifname[DEV_NET_IFNAME_MAX]; /* tap=: the interface; fd=: what the kernel calls it */
    int fd;                          /* fd=N as given; -1 for tap= */
    uint8_t mac[6];
    bool mac_given;
};

/* Parses one --net value; a bad value gives a one-line error naming the flag. */
int dev_net_parse(const char *spec, struct dev_net *out);
/* Pure: "52:54:00:12:34:56" into mac; 0, or -EINVAL for anything else (a multicast MAC too). */
int dev_net_parse_mac(const char *text, uint8_t mac[6]);
/* The TAP's fd: tap= opens /dev/net/tun and attaches IFNAME; fd= checks that N is a TAP with a
 * virtio-net header. what names the flag in errors. */
int dev_net_open(struct dev_net *net, int *fd_out);

#endif
