# eBPF datapath (issue 3): the traffic tests need ping inside network namespaces, the
# benchmark compares fos1's maps with nftables, ipset and iptables. clang, llvm,
# libbpf-dev and bpftool come from scripts/bootstrap.sh itself.
# Sourced by scripts/bootstrap.sh with `say`, `as_root` and `apt_install`.
apt_install iputils-ping nftables ipset iptables time
