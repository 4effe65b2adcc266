/* nbd-replicator: preloaded into nbdkit right after the sanitizer runtime in
 * the sanitizer test runs (tests/lib.sh, tests/torture/torture.py); never
 * part of the program.
 *
 * nbdkit itself is not instrumented, so the runtime (LD_PRELOAD) starts at
 * the first malloc, and that is in p11-kit's constructor (gnutls, linked by
 * nbdkit), inside newlocale, which holds glibc's locale lock for writing.
 * The runtime's start looks up "swift_demangle" with dlsym and then calls
 * dlerror, which translates the lookup's error message and so takes the same
 * lock for reading: glibc refuses that (the thread is its writer), but the
 * unlock that follows releases the writer's lock, and newlocale's own unlock
 * then leaves the lock with a reader count of -1.  Every later writer of the
 * lock (libconfig's newlocale, json-c's parser, p11-kit's freelocale at exit)
 * can block for good: seen as "replicator did not stop in 60 s" in the
 * torture, with one thread left in _dl_fini -> p11-kit -> freelocale.
 *
 * Defining the symbol makes that lookup succeed: no error, no message, no
 * lock.  It demangles nothing; NULL makes the runtime fall back to its own
 * C++ demangling. */

#include <stddef.h>
#include <stdint.h>

char *swift_demangle (const char *name, size_t len, char *out, size_t *outlen,
                      uint32_t flags);

char *
swift_demangle (const char *name, size_t len, char *out, size_t *outlen,
                uint32_t flags)
{
  (void) name; (void) len; (void) out; (void) outlen; (void) flags;
  return NULL;
}
