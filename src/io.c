/* io.c: see io.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

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

int
io_sync_parent_dir (const char *path)
{
  char dir[PATH_MAX];
  const char *slash = strrchr (path, '/');
  size_t n = slash ? (size_t) (slash - path) : 0;
  int fd, r, e;

  if (n >= sizeof dir) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (slash && n == 0)
    n = 1;                                 /* "/name": the root */
  memcpy (dir, slash ? path : ".", slash ? n : 1);
  dir[slash ? n : 1] = '\0';
  fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd == -1)
    return -1;
  pft_sync (fd, 'S');                      /* power-loss trace: names made durable */
  r = fsync (fd);
  e = errno;
  if (r == 0)
    pft_sync (fd, 'D');
  close (fd);
  errno = e;
  return r;
}

uint64_t
io_mono_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

bool
io_wait_until (int fd, short ev, uint64_t deadline, int stop_fd)
{
  struct pollfd p[2] = { { .fd = fd, .events = ev }, { .fd = stop_fd, .events = POLLIN } };
  uint64_t now = io_mono_ms ();
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
