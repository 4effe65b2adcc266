/* io.c: see io.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "io.h"
#include "pftrace.h"
#include "units.h"

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

int
io_sync_parent_dir (const char *path)
{
  char real[PATH_MAX], *dir, *slash;
  int fd, r, e;

  /* The directory that holds the file itself, not a symbolic link to it. */
  if (!realpath (path, real)) {
    if (strlen (path) >= sizeof real) {
      errno = ENAMETOOLONG;
      return -1;
    }
    strcpy (real, path);
  }
  slash = strrchr (real, '/');
  dir = slash ? real : (char *) ".";
  if (slash)
    slash[slash == real] = '\0';          /* "/name": the root */
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1)
    return -1;
  pft_sync (fd, 'S');                      /* power-loss trace: names made durable */
  r = fsync (fd);
  e = errno;
  if (r == 0)
    pft_sync (fd, 'D');
  close (fd);
  /* EINVAL: a directory that cannot be synced because it is not on a
   * storage filesystem (/proc/self/fd, a memfd's): nothing to make durable. */
  if (r == -1 && e == EINVAL)
    return 0;
  errno = e;
  return r;
}

bool
io_wait_until (int fd, short ev, uint64_t deadline, int stop_fd)
{
  struct pollfd p[2] = { { .fd = fd, .events = ev }, { .fd = stop_fd, .events = POLLIN } };
  uint64_t now = mono_ns () / 1000000u;
  return now < deadline && poll (p, stop_fd >= 0 ? 2 : 1, (int) (deadline - now)) > 0 &&
    (stop_fd < 0 || !p[1].revents);
}

int
io_accept_next (int lfd, int stop_fd)
{
  for (;;) {
    struct pollfd p[2] = { { .fd = lfd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
    int c;
    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (p[1].revents)
      return -1;
    if ((c = accept4 (lfd, NULL, NULL, SOCK_CLOEXEC)) != -1)
      return c;
  }
}

bool
io_all_zero (const void *buf, size_t len)
{
  const uint8_t *p = buf;
  size_t i;

  for (i = 0; i < len; i++)
    if (p[i])
      return false;
  return true;
}
