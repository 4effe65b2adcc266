/* io.c: see io.h. */
#include <config.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "pftrace.h"

int
io_pread_full (int fd, void *buf, size_t len, uint64_t off, bool eof_zeroes)
{
  while (len) {
    ssize_t r = pread (fd, buf, len, (off_t) off);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    if (r == 0) {
      if (!eof_zeroes) {
        errno = EIO;
        return -1;
      }
      memset (buf, 0, len);
      return 0;
    }
    buf = (char *) buf + r;
    len -= (size_t) r;
    off += (uint64_t) r;
  }
  return 0;
}

int
io_pwrite_full (int fd, const void *buf, size_t len, uint64_t off)
{
  pft_write (fd, buf, len, off);         /* recorded first: a failed write may land in part */
  while (len) {
    ssize_t r = pwrite (fd, buf, len, (off_t) off);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = EIO;
      return -1;
    }
    buf = (const char *) buf + r;
    len -= (size_t) r;
    off += (uint64_t) r;
  }
  return 0;
}
