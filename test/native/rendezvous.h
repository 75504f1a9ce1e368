// A file rendezvous for the tests' communicators: a fresh name each time.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <string>

namespace pirl::test {

inline std::string freshRendezvousFile() {
  char name[] = "/tmp/pirl-rendezvous-XXXXXX";
  close(mkstemp(name));
  unlink(name);  // FileStore creates it; a stale file would hold an old run's keys
  return name;
}

}  // namespace pirl::test
