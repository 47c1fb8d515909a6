// Where and how long dcpp's own gloo group meets (CommFromTorchrunEnv, MakeGlooBackend in
// gloo.h): which network interfaces or address gloo binds, and the two timeouts. An explicit
// field wins; an unset one comes from the environment, read the way PyTorch reads it
// (GLOO_SOCKET_IFNAME), then from a built-in default. Pure functions, no torch: safe anywhere.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace dcpp {

struct GlooOptions {
  // Network interfaces gloo binds, one gloo device each (collectives alternate between them,
  // as in PyTorch's ProcessGroupGloo); every rank must name the same number.
  // Default: empty, then GLOO_SOCKET_IFNAME ("eth0" or "eth0,eth1").
  std::vector<std::string> interfaces;
  // A hostname or address to bind when no interface is named. Default: empty, then (as PyTorch)
  // this host's name when it resolves to an address that can be bound — except that a name
  // resolving only to a loopback address while MASTER_ADDR is another host gives way to the
  // local address that routes to MASTER_ADDR — else the loopback address. CommFromTorchrunEnv
  // binds 127.0.0.1 when MASTER_ADDR itself is a loopback address.
  std::string host;
  // Bounds the whole rendezvous: joining the TCPStore and gloo's full-mesh connect.
  // Default: 0, then DCPP_RENDEZVOUS_TIMEOUT_S (seconds), else 300 s.
  std::chrono::milliseconds rendezvous_timeout{0};
  // Bounds each collective; after one fails, the group refuses further collectives at once.
  // Default: 0, then DCPP_COLLECTIVE_TIMEOUT_S (seconds), else 600 s.
  std::chrono::milliseconds collective_timeout{0};
};

inline constexpr char kRendezvousTimeoutEnv[] = "DCPP_RENDEZVOUS_TIMEOUT_S";
inline constexpr char kCollectiveTimeoutEnv[] = "DCPP_COLLECTIVE_TIMEOUT_S";
inline constexpr std::chrono::milliseconds kDefaultRendezvousTimeout = std::chrono::seconds(300);
inline constexpr std::chrono::milliseconds kDefaultCollectiveTimeout = std::chrono::seconds(600);

// The interface names in a GLOO_SOCKET_IFNAME-style list: comma-separated, blanks around a
// name ignored. Throws dcpp::Error naming `source` on an empty list or an empty entry.
std::vector<std::string> ParseInterfaceList(const std::string& list, const std::string& source);

// `given` when it is positive; else environment variable `env` as seconds (a positive number,
// fractions allowed); else `fallback`. Throws dcpp::Error naming `env` when it is malformed.
std::chrono::milliseconds TimeoutFrom(std::chrono::milliseconds given, const char* env,
                                      std::chrono::milliseconds fallback);

// What gloo binds and why: either interfaces or one host, and a phrase for error messages
// ("GLOO_SOCKET_IFNAME=eth0 (10.0.0.2)", "hostname 'n1' (10.0.0.2)", ...).
struct GlooBind {
  std::vector<std::string> interfaces;  // one device each; empty: bind `host`
  std::string host;
  std::string why;
};

// Chooses the binding for `opts` on this host: opts.interfaces, then opts.host, then
// GLOO_SOCKET_IFNAME, then `fallback_host` (non-empty when the caller knows better, e.g.
// loopback for a loopback MASTER_ADDR), then the hostname / route-to-`master_addr` / loopback
// order of GlooOptions::host. Named interfaces must exist here: an unknown one throws
// dcpp::Error naming it, where it came from and the interfaces this host has.
GlooBind ChooseGlooBind(const GlooOptions& opts, const std::string& master_addr,
                        const std::string& fallback_host = "");

// "eth0 10.0.0.2, lo 127.0.0.1": this host's interfaces and their addresses.
std::string DescribeInterfaces();

bool IsLoopbackAddress(const std::string& host);

}  // namespace dcpp
