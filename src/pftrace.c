/* pftrace.c: see pftrace.h. */
#include <config.h>

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pftrace.h"
#include "report.h"

int pft_fd = -1;                 /* opened once (pft_once); closed under pft_lock */
static pthread_mutex_t pft_lock = PTHREAD_MUTEX_INITIALIZER;   /* guards pft_fd's writes
                                                                   and its closing: one
                                                                   record per writev */
static pthread_once_t pft_once = PTHREAD_ONCE_INIT;

static void
pft_open (void)
{
  const char *p = getenv ("NBD_REPLICATOR_PFTRACE");
  if (!p || !*p)
    return;
  pft_fd = open (p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (pft_fd == -1)
    rep_error ("NBD_REPLICATOR_PFTRACE %s: %m", p);
  else
    rep_info ("tracing writes and syncs to %s (power-loss test)", p);
}

void
pft_init (void)
{
  pthread_once (&pft_once, pft_open);
}

struct pft_hdr {
  uint8_t type, zero;
  uint16_t pathlen;
  uint32_t zero2;
  uint64_t off, len;
};

static void
emit (char type, const char *path, uint64_t off, uint64_t len, const void *data, uint64_t dlen)
{
  struct pft_hdr h = { .type = (uint8_t) type, .pathlen = (uint16_t) strlen (path),
                       .off = off, .len = len };
  struct iovec iov[3] = { { &h, sizeof h }, { (void *) path, h.pathlen }, { (void *) data, dlen } };
  size_t want = sizeof h + h.pathlen + dlen, done = 0;
  int n = 0;

  /* One writev per record under the lock: records never interleave. */
  pthread_mutex_lock (&pft_lock);
  if (pft_fd < 0) {                      /* stopped by another thread's failure */
    pthread_mutex_unlock (&pft_lock);
    return;
  }
  while (done < want) {
    ssize_t r = writev (pft_fd, iov + n, 3 - n);
    if (r <= 0) {
      rep_error ("power-loss trace: write failed: %m; tracing stops");
      close (pft_fd);
      pft_fd = -1;
      break;
    }
    done += (size_t) r;
    while (n < 3 && (size_t) r >= iov[n].iov_len) {
      r -= (ssize_t) iov[n].iov_len;
      n++;
    }
    if (n < 3) {
      iov[n].iov_base = (char *) iov[n].iov_base + r;
      iov[n].iov_len -= (size_t) r;
    }
  }
  pthread_mutex_unlock (&pft_lock);
}

void
pft_record (char type, int fd, uint64_t off, uint64_t len, const void *data)
{
  char link[64], path[PATH_MAX];
  ssize_t n;

  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, path, sizeof path - 1);
  if (n <= 0)
    return;
  path[n] = '\0';
  emit (type, path, off, len, data, type == 'W' ? len : 0);
}

void
pft_rename (const char *from, const char *to)
{
  char a[PATH_MAX], b[PATH_MAX];

  if (pft_fd < 0 || !realpath (to, b))
    return;
  /* The old name is gone: its directory's real path plus its last part. */
  {
    const char *slash = strrchr (from, '/');
    char dir[PATH_MAX];
    size_t dl = slash ? (size_t) (slash - from) : 0;
    if (dl >= sizeof dir)
      return;
    memcpy (dir, from, dl);
    dir[dl] = '\0';
    if (!realpath (dl ? dir : ".", a) || strlen (a) + strlen (slash ? slash : from) + 2 > sizeof a)
      return;
    strcat (a, slash ? slash : "/");
    if (!slash)
      strcat (a, from);
  }
  emit ('R', a, 0, strlen (b), b, strlen (b));
}
