// Port isolation: a cgroup BPF program (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, hooks
// INET4_BIND and INET6_BIND) that lets processes of one app bind only its own
// port (and port 0, for client sockets), and only on loopback: 0.0.0.0 is
// rewritten to 127.0.0.1, other IPv4 addresses outside 127/8 and IPv6
// addresses other than ::1 are refused with EPERM. Written as raw BPF
// instructions through bpf(2): no libbpf, no compiler at run time.
#pragma once

#include <stdint.h>

#include <string>

#include "common/status.h"

namespace hc::runtime {

// True when this process may load and attach such programs (root, kernel
// support, a unified cgroup hierarchy).
bool BindFilterSupported();

// Attaches the filter to the unified cgroup directory `cgroup_dir` for `port`.
// The program stays attached as long as the cgroup exists; attaching again
// replaces it (BPF_F_ALLOW_OVERRIDE is not used; a second call first detaches).
Status AttachBindFilter(const std::string& cgroup_dir, uint16_t port);

}  // namespace hc::runtime
