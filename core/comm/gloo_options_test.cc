#include "core/comm/gloo_options.h"

#include <gtest/gtest.h>
#include <net/if.h>
#include <ifaddrs.h>

#include <cstdlib>
#include <functional>

#include "core/base/error.h"

namespace dcpp {
namespace {

using std::chrono::milliseconds;

// Sets an environment variable for one scope and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The name of the loopback interface (usually "lo"); every Linux host has one.
std::string LoopbackInterface() {
  ifaddrs* list = nullptr;
  std::string name;
  if (getifaddrs(&list) != 0) return name;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if ((i->ifa_flags & IFF_LOOPBACK) && i->ifa_addr != nullptr) {
      name = i->ifa_name;
      break;
    }
  }
  freeifaddrs(list);
  return name;
}

TEST(ParseInterfaceList, OneOrSeveralNames) {
  EXPECT_EQ(ParseInterfaceList("eth0", "X"), std::vector<std::string>({"eth0"}));
  EXPECT_EQ(ParseInterfaceList("vethA,lo", "X"), std::vector<std::string>({"vethA", "lo"}));
  EXPECT_EQ(ParseInterfaceList(" eth0 , ib0 ", "X"), std::vector<std::string>({"eth0", "ib0"}));
}

TEST(ParseInterfaceList, EmptyEntriesAreRefusedNamingTheSource) {
  for (const char* bad : {"", ",", "eth0,", ",eth0", "eth0,,ib0", " , "}) {
    const std::string e = ErrorOf([&] { ParseInterfaceList(bad, "GLOO_SOCKET_IFNAME"); });
    EXPECT_NE(e.find("GLOO_SOCKET_IFNAME='"), std::string::npos) << "'" << bad << "': " << e;
    EXPECT_NE(e.find("empty interface name"), std::string::npos) << e;
  }
}

TEST(TimeoutFrom, OptionBeatsEnvironmentBeatsDefault) {
  const milliseconds fallback(300000);
  {
    ScopedEnv env(kRendezvousTimeoutEnv, nullptr);
    EXPECT_EQ(TimeoutFrom(milliseconds(0), kRendezvousTimeoutEnv, fallback), fallback);
    EXPECT_EQ(TimeoutFrom(milliseconds(1234), kRendezvousTimeoutEnv, fallback), milliseconds(1234));
  }
  {
    ScopedEnv env(kRendezvousTimeoutEnv, "15");
    EXPECT_EQ(TimeoutFrom(milliseconds(0), kRendezvousTimeoutEnv, fallback), milliseconds(15000));
    EXPECT_EQ(TimeoutFrom(milliseconds(2000), kRendezvousTimeoutEnv, fallback), milliseconds(2000));
  }
  {
    ScopedEnv env(kCollectiveTimeoutEnv, "2.5");
    EXPECT_EQ(TimeoutFrom(milliseconds(0), kCollectiveTimeoutEnv, fallback), milliseconds(2500));
    // The two variables are separate.
    ScopedEnv other(kRendezvousTimeoutEnv, nullptr);
    EXPECT_EQ(TimeoutFrom(milliseconds(0), kRendezvousTimeoutEnv, fallback), fallback);
  }
}

TEST(TimeoutFrom, MalformedEnvironmentIsRefusedNamingTheVariable) {
  for (const char* bad : {"abc", "10s", "-5", "0", "nan", "1e20"}) {
    ScopedEnv env(kCollectiveTimeoutEnv, bad);
    const std::string e = ErrorOf([] { TimeoutFrom(milliseconds(0), kCollectiveTimeoutEnv, milliseconds(1)); });
    EXPECT_NE(e.find(std::string(kCollectiveTimeoutEnv) + "='" + bad + "'"), std::string::npos) << e;
    // An explicit option never reads the variable.
    EXPECT_EQ(TimeoutFrom(milliseconds(7), kCollectiveTimeoutEnv, milliseconds(1)), milliseconds(7));
  }
}

TEST(ChooseGlooBind, ExplicitInterfacesBeatTheEnvironment) {
  const std::string lo = LoopbackInterface();
  ASSERT_FALSE(lo.empty());
  ScopedEnv env("GLOO_SOCKET_IFNAME", "no-such-if0");
  GlooOptions o;
  o.interfaces = {lo, lo};
  const GlooBind b = ChooseGlooBind(o, "10.1.2.3");
  EXPECT_EQ(b.interfaces, std::vector<std::string>({lo, lo}));
  EXPECT_NE(b.why.find("GlooOptions::interfaces"), std::string::npos) << b.why;
  EXPECT_NE(b.why.find("127.0.0.1"), std::string::npos) << b.why;
  o.interfaces.clear();
  o.host = "10.9.8.7";
  const GlooBind h = ChooseGlooBind(o, "10.1.2.3");
  EXPECT_TRUE(h.interfaces.empty());
  EXPECT_EQ(h.host, "10.9.8.7");
}

TEST(ChooseGlooBind, EnvironmentListGivesOneDeviceEachAndBeatsTheFallback) {
  const std::string lo = LoopbackInterface();
  ScopedEnv env("GLOO_SOCKET_IFNAME", (lo + "," + lo).c_str());
  const GlooBind b = ChooseGlooBind(GlooOptions{}, "127.0.0.1", "127.0.0.1");
  EXPECT_EQ(b.interfaces, std::vector<std::string>({lo, lo}));
  EXPECT_NE(b.why.find("GLOO_SOCKET_IFNAME=" + lo + "," + lo), std::string::npos) << b.why;
}

TEST(ChooseGlooBind, UnknownInterfaceNamesItTheVariableAndWhatExists) {
  const std::string lo = LoopbackInterface();
  ScopedEnv env("GLOO_SOCKET_IFNAME", (lo + ",vethZZ9").c_str());
  const std::string e = ErrorOf([] { ChooseGlooBind(GlooOptions{}, "10.1.2.3"); });
  EXPECT_NE(e.find("GLOO_SOCKET_IFNAME"), std::string::npos) << e;
  EXPECT_NE(e.find("'vethZZ9'"), std::string::npos) << e;
  EXPECT_NE(e.find(lo + " 127.0.0.1"), std::string::npos) << e;  // the interfaces this host has
}

TEST(ChooseGlooBind, WithoutSettingsFallsBackAsPyTorchDoes) {
  ScopedEnv env("GLOO_SOCKET_IFNAME", nullptr);
  // The caller's fallback (loopback for a loopback MASTER_ADDR) comes before the hostname.
  const GlooBind l = ChooseGlooBind(GlooOptions{}, "127.0.0.1", "127.0.0.1");
  EXPECT_EQ(l.host, "127.0.0.1");
  EXPECT_NE(l.why.find("MASTER_ADDR=127.0.0.1"), std::string::npos) << l.why;
  // Otherwise some host is always chosen, and the reason says which and why.
  const GlooBind b = ChooseGlooBind(GlooOptions{}, "127.0.0.1");
  EXPECT_TRUE(b.interfaces.empty());
  EXPECT_FALSE(b.host.empty());
  EXPECT_FALSE(b.why.empty());
}

TEST(IsLoopbackAddress, Recognises) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackAddress("127.0.1.1"));
  EXPECT_TRUE(IsLoopbackAddress("localhost"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.1"));
  EXPECT_FALSE(IsLoopbackAddress("node1"));
}

}  // namespace
}  // namespace dcpp
