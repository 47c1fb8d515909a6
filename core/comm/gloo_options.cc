#include "core/comm/gloo_options.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>

#include "core/base/error.h"

namespace dcpp {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

std::string NumericHost(const sockaddr* sa) {
  char buf[NI_MAXHOST] = {};
  const socklen_t len = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (getnameinfo(sa, len, buf, sizeof(buf), nullptr, 0, NI_NUMERICHOST) != 0) return "?";
  return buf;
}

// Interface name -> its IPv4/IPv6 addresses, in the order getifaddrs lists them.
std::map<std::string, std::vector<std::string>> InterfaceAddresses() {
  std::map<std::string, std::vector<std::string>> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const int f = i->ifa_addr->sa_family;
    if (f != AF_INET && f != AF_INET6) continue;
    out[i->ifa_name].push_back(NumericHost(i->ifa_addr));
  }
  freeifaddrs(list);
  return out;
}

std::string Joined(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// The addresses `host` resolves to that a socket can bind here (PyTorch's test for a usable
// hostname).
std::vector<std::string> BindableAddresses(const std::string& host) {
  std::vector<std::string> out;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0) out.push_back(NumericHost(a->ai_addr));
    close(fd);
  }
  freeaddrinfo(res);
  return out;
}

// The local address the kernel would use to reach `remote` (a UDP connect sends nothing), or "".
std::string RouteAddressTo(const std::string& remote) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (remote.empty() || getaddrinfo(remote.c_str(), "9", &hints, &res) != 0) return "";
  std::string out;
  for (addrinfo* a = res; a != nullptr && out.empty(); a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t len = sizeof(local);
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
      out = NumericHost(reinterpret_cast<sockaddr*>(&local));
    }
    close(fd);
  }
  freeaddrinfo(res);
  return out;
}

std::string LocalHostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

GlooBind ForInterfaces(std::vector<std::string> names, const std::string& source) {
  const auto have = InterfaceAddresses();
  std::vector<std::string> described;
  for (const std::string& n : names) {
    auto it = have.find(n);
    DCPP_CHECK(it != have.end(), source, " names network interface '", n,
               "', which this host does not have (it has: ", DescribeInterfaces(), ")");
    described.push_back(n + " " + Joined(it->second, "/"));
  }
  GlooBind b;
  b.interfaces = std::move(names);
  b.why = StrCat(source, " (", Joined(described, ", "), ")");
  return b;
}

}  // namespace

bool IsLoopbackAddress(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  return false;
}

std::vector<std::string> ParseInterfaceList(const std::string& list, const std::string& source) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    const std::string name = Trim(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    DCPP_CHECK(!name.empty(), source, "='", list,
               "' has an empty interface name (expected a comma-separated list such as eth0,eth1)");
    out.push_back(name);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::chrono::milliseconds TimeoutFrom(std::chrono::milliseconds given, const char* env,
                                      std::chrono::milliseconds fallback) {
  if (given.count() > 0) return given;
  const std::string v = Trim(Env(env));
  if (v.empty()) return fallback;
  char* end = nullptr;
  errno = 0;
  const double s = std::strtod(v.c_str(), &end);
  DCPP_CHECK(errno == 0 && end == v.c_str() + v.size() && std::isfinite(s) && s > 0 && s < 1e9,
             "environment variable ", env, "='", v, "' is not a positive number of seconds");
  return std::chrono::milliseconds(std::max<int64_t>(1, std::llround(s * 1000)));
}

std::string DescribeInterfaces() {
  std::vector<std::string> parts;
  for (const auto& [name, addrs] : InterfaceAddresses()) parts.push_back(name + " " + Joined(addrs, "/"));
  return parts.empty() ? "none found" : Joined(parts, ", ");
}

GlooBind ChooseGlooBind(const GlooOptions& opts, const std::string& master_addr,
                        const std::string& fallback_host) {
  if (!opts.interfaces.empty()) return ForInterfaces(opts.interfaces, "GlooOptions::interfaces");
  GlooBind b;
  if (!opts.host.empty()) {
    b.host = opts.host;
    b.why = StrCat("GlooOptions::host '", opts.host, "'");
    return b;
  }
  const std::string ifname = Env("GLOO_SOCKET_IFNAME");
  if (!ifname.empty()) {
    return ForInterfaces(ParseInterfaceList(ifname, "GLOO_SOCKET_IFNAME"),
                         "GLOO_SOCKET_IFNAME=" + ifname);
  }
  if (!fallback_host.empty()) {
    b.host = fallback_host;
    b.why = master_addr.empty() ? StrCat("'", fallback_host, "'")
                                : StrCat("'", fallback_host, "' (MASTER_ADDR=", master_addr, " is loopback)");
    return b;
  }
  const std::string hostname = LocalHostname();
  const std::vector<std::string> addrs = hostname.empty() ? std::vector<std::string>() : BindableAddresses(hostname);
  bool only_loopback = !addrs.empty();
  for (const std::string& a : addrs) only_loopback = only_loopback && IsLoopbackAddress(a);
  if (!addrs.empty() && !(only_loopback && !master_addr.empty() && !IsLoopbackAddress(master_addr))) {
    b.host = hostname;
    b.why = StrCat("this host's name '", hostname, "' (", Joined(addrs, ", "), ")");
    return b;
  }
  const std::string route = IsLoopbackAddress(master_addr) ? "" : RouteAddressTo(master_addr);
  if (!route.empty()) {
    b.host = route;
    b.why = StrCat("the local address ", route, " that routes to MASTER_ADDR=", master_addr,
                   addrs.empty() ? StrCat(" (hostname '", hostname, "' resolves to no local address)")
                                 : StrCat(" (hostname '", hostname, "' resolves to loopback only: ",
                                          Joined(addrs, ", "), ")"));
    return b;
  }
  if (!addrs.empty()) {  // PyTorch's choice too: the name, loopback though it is
    b.host = hostname;
    b.why = StrCat("this host's name '", hostname, "' (", Joined(addrs, ", "),
                   "; no route to MASTER_ADDR=", master_addr, ")");
    return b;
  }
  b.host = "127.0.0.1";
  b.why = StrCat("the loopback address 127.0.0.1 (hostname '", hostname,
                 "' resolves to no usable address)");
  return b;
}

}  // namespace dcpp
