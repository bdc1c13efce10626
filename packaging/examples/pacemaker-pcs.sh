#!/bin/sh
# The same Pacemaker configuration as pacemaker.crm, with pcs (docs/ha.md).
# Not run in hoststat's tests (no cluster manager here); `sh -n` checks it.
set -e
pcs resource create statd systemd:hoststat-statd op monitor interval=30s timeout=60s clone interleave=true
pcs resource create nfs-fs ocf:heartbeat:Filesystem device=/dev/drbd0 directory=/srv/nfs fstype=ext4 --group nfs
pcs resource create nfs-daemon ocf:heartbeat:nfsserver nfs_no_notify=true --group nfs
pcs resource create nfs-export ocf:heartbeat:exportfs clientspec=192.0.2.0/24 options=rw,sync directory=/srv/nfs fsid=1 --group nfs
pcs resource create nfs-ip ocf:heartbeat:IPaddr2 ip=192.0.2.10 cidr_netmask=24 --group nfs
pcs constraint order start statd-clone then start nfs
