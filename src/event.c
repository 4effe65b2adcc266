/* event.c: see event.h. */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "report.h"
#include "units.h"

extern char **environ;

enum level { INFO, WARNING, ERROR };
static const char *const level_names[] = { "info", "warning", "error" };

static const struct {
  const char *name;
  enum level level;
} events[EV_COUNT] = {
  [EV_LINK_UP] = { "link-up", INFO },
  [EV_LINK_DOWN] = { "link-down", WARNING },
  [EV_SITE_DISCONNECTED] = { "site-disconnected", WARNING },
  [EV_SITE_BACK] = { "site-back", INFO },
  [EV_SITE_CAUGHT_UP] = { "site-caught-up", INFO },
  [EV_SITE_BEHIND] = { "site-behind", WARNING },
  [EV_SITE_WITHIN] = { "site-within-threshold", INFO },
  [EV_SITE_DIRTY] = { "site-dirty", WARNING },
  [EV_RESYNC_STARTED] = { "resync-started", INFO },
  [EV_RESYNC_FINISHED] = { "resync-finished", INFO },
  [EV_SITE_PAUSED] = { "site-paused", INFO },
  [EV_SITE_RESUMED] = { "site-resumed", INFO },
  [EV_LOCAL_FAILED] = { "local-leg-failed", ERROR },
  [EV_LOCAL_BACK] = { "local-leg-back", INFO },
  [EV_RESTORE_STARTED] = { "restore-started", INFO },
  [EV_SERVED_FROM] = { "served-from", WARNING },
  [EV_LOG_FAILED] = { "log-failed", ERROR },
  [EV_VERIFY_FINISHED] = { "verify-finished", INFO },
  [EV_LEG_REFUSED] = { "leg-refused", ERROR },
  [EV_LEG_NEW] = { "leg-new", WARNING },
  [EV_LEG_LABELLED] = { "leg-labelled", INFO },
  [EV_SWITCHOVER] = { "switchover", INFO },
  [EV_SITE_SYNC_BEHIND] = { "site-sync-behind", WARNING },
  [EV_SITE_SYNC_BACK] = { "site-sync-back", INFO },
};

#define QLEN 256
#define HOOK_TIMEOUT_S 30

struct queued {
  enum rep_event ev;
  int site;
  char device[64];
  char text[512];
  time_t when;
};

/* lock guards the queue (q, qhead, qlen), running, stopping, counts and
 * dropped (failures is an atomic counter); cv wakes the hook thread for a
 * new event or the stop, and the stopper once the queue is empty.  hook,
 * control_socket and thread are set before the thread starts and freed
 * after it is joined. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct queued q[QLEN];
static unsigned qhead, qlen;
static char *hook, *control_socket;
static bool running, stopping;
static pthread_t thread;
static uint64_t counts[EV_COUNT], failures, dropped;

const char *
event_name (enum rep_event ev)
{
  return ev < EV_COUNT ? events[ev].name : "unknown";
}

void
rep_event (enum rep_event ev, int site, const char *device, const char *fmt, ...)
{
  char text[512], where[128];
  va_list ap;
  int saved = errno;

  va_start (ap, fmt);
  vsnprintf (text, sizeof text, fmt, ap);
  va_end (ap);
  if (site >= 0 && device)
    snprintf (where, sizeof where, "device '%s' site %d: ", device, site);
  else if (site >= 0)
    snprintf (where, sizeof where, "site %d: ", site);
  else if (device)
    snprintf (where, sizeof where, "device '%s': ", device);
  else
    where[0] = '\0';
  switch (events[ev].level) {
  case ERROR: rep_error ("%s%s", where, text); break;
  case WARNING: rep_warn ("%s%s", where, text); break;
  default: rep_info ("%s%s", where, text); break;
  }

  pthread_mutex_lock (&lock);
  counts[ev]++;
  if (hook && !stopping) {
    if (qlen == QLEN) {
      if (dropped++ == 0)
        rep_warn ("on_event: %d events are waiting for the hook; later ones are not run "
                  "(they are still logged)", QLEN);
    }
    else {
      struct queued *e = &q[(qhead + qlen++) % QLEN];
      e->ev = ev;
      e->site = site;
      snprintf (e->device, sizeof e->device, "%s", device ? device : "");
      snprintf (e->text, sizeof e->text, "%s", text);
      e->when = time (NULL);
      pthread_cond_signal (&cv);
    }
  }
  pthread_mutex_unlock (&lock);
  errno = saved;
}

void
event_configure (const char *h, const char *ctl)
{
  pthread_mutex_lock (&lock);
  free (hook);
  free (control_socket);
  hook = h && *h ? strdup (h) : NULL;
  control_socket = ctl ? strdup (ctl) : NULL;
  stopping = false;
  pthread_mutex_unlock (&lock);
}

/* Run the hook for one event; wait for it at most HOOK_TIMEOUT_S. */
static void
run_hook (const char *path, const struct queued *e)
{
  char v[7][600];
  char *argv[3] = { (char *) path, (char *) event_name (e->ev), NULL };
  char **envp;
  size_t n = 0, i;
  pid_t pid;
  int r, status = 0;
  unsigned waited;

  snprintf (v[0], sizeof v[0], "NBD_REPLICATOR_EVENT=%s", event_name (e->ev));
  snprintf (v[1], sizeof v[1], "NBD_REPLICATOR_LEVEL=%s", level_names[events[e->ev].level]);
  if (e->site >= 0)
    snprintf (v[2], sizeof v[2], "NBD_REPLICATOR_SITE=%d", e->site);
  else
    snprintf (v[2], sizeof v[2], "NBD_REPLICATOR_SITE=");
  snprintf (v[3], sizeof v[3], "NBD_REPLICATOR_DEVICE=%s", e->device);
  snprintf (v[4], sizeof v[4], "NBD_REPLICATOR_REASON=%s", e->text);
  snprintf (v[5], sizeof v[5], "NBD_REPLICATOR_TIME=%lld", (long long) e->when);
  snprintf (v[6], sizeof v[6], "NBD_REPLICATOR_CONTROL=%s", control_socket ? control_socket : "");
  while (environ && environ[n])
    n++;
  envp = calloc (n + 8, sizeof *envp);
  if (!envp)
    return;
  for (i = 0; i < 7; i++)
    envp[i] = v[i];
  for (i = 0; i < n; i++)                /* ours first: getenv finds them */
    envp[7 + i] = environ[i];

  /* The hook starts with default signals (nbdkit ignores SIGPIPE) and an
   * empty mask, in a process group of its own so a timeout kills what it
   * started too. */
  {
    posix_spawnattr_t at;
    sigset_t none, def;
    posix_spawnattr_init (&at);
    sigemptyset (&none);
    sigemptyset (&def);
    sigaddset (&def, SIGPIPE);
    posix_spawnattr_setsigmask (&at, &none);
    posix_spawnattr_setsigdefault (&at, &def);
    posix_spawnattr_setpgroup (&at, 0);
    posix_spawnattr_setflags (&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    r = posix_spawn (&pid, path, NULL, &at, argv, envp);
    posix_spawnattr_destroy (&at);
  }
  free (envp);
  if (r != 0) {
    errno = r;
    rep_warn ("on_event %s: cannot run it for %s: %m", path, event_name (e->ev));
    __atomic_add_fetch (&failures, 1, __ATOMIC_RELAXED);
    return;
  }
  for (waited = 0; ; waited++) {
    r = waitpid (pid, &status, WNOHANG);
    if (r == pid || (r == -1 && errno != EINTR))
      break;
    if (waited == HOOK_TIMEOUT_S * 100) {
      rep_warn ("on_event %s: still running after %d s for %s: killed", path, HOOK_TIMEOUT_S,
                event_name (e->ev));
      kill (-pid, SIGKILL);              /* the hook and what it started */
      waitpid (pid, &status, 0);
      __atomic_add_fetch (&failures, 1, __ATOMIC_RELAXED);
      return;
    }
    usleep (10000);
  }
  rep_debugc (REP_DBG_EVENT, "on_event %s %s: done in %u ms (status 0x%x)", path,
              event_name (e->ev), waited * 10, (unsigned) status);
  if (r == pid && (!WIFEXITED (status) || WEXITSTATUS (status) != 0)) {
    if (WIFEXITED (status))
      rep_warn ("on_event %s: exited with status %d for %s", path, WEXITSTATUS (status),
                event_name (e->ev));
    else
      rep_warn ("on_event %s: killed by signal %d for %s", path,
                WIFSIGNALED (status) ? WTERMSIG (status) : 0, event_name (e->ev));
    __atomic_add_fetch (&failures, 1, __ATOMIC_RELAXED);
  }
}

static void *
event_thread (void *arg)
{
  (void) arg;
  pthread_mutex_lock (&lock);
  for (;;) {
    struct queued e;
    char *path;
    while (!qlen && !stopping)
      pthread_cond_wait (&cv, &lock);
    if (!qlen)
      break;                             /* stopping and drained */
    e = q[qhead];
    qhead = (qhead + 1) % QLEN;
    qlen--;
    path = hook ? strdup (hook) : NULL;
    pthread_mutex_unlock (&lock);
    if (path)
      run_hook (path, &e);
    free (path);
    pthread_mutex_lock (&lock);
    pthread_cond_broadcast (&cv);        /* event_stop waits for the queue */
  }
  pthread_mutex_unlock (&lock);
  return NULL;
}

int
event_start (void)
{
  int e;

  pthread_mutex_lock (&lock);
  if (running || !hook) {
    pthread_mutex_unlock (&lock);
    return 0;
  }
  stopping = false;
  e = pthread_create (&thread, NULL, event_thread, NULL);
  running = e == 0;
  pthread_mutex_unlock (&lock);
  if (e) {
    errno = e;
    rep_error ("on_event: cannot start its thread: %m");
    return -1;
  }
  return 0;
}

void
event_stop (unsigned timeout_ms)
{
  struct timespec dl;

  pthread_mutex_lock (&lock);
  if (!running) {
    pthread_mutex_unlock (&lock);
    return;
  }
  dl = deadline_ts (wall_ns (), timeout_ms);
  while (qlen && pthread_cond_timedwait (&cv, &lock, &dl) == 0)
    ;
  if (qlen)
    rep_warn ("on_event: %u events not run at stop", qlen);
  qlen = 0;
  stopping = true;
  pthread_cond_broadcast (&cv);
  pthread_mutex_unlock (&lock);
  pthread_join (thread, NULL);           /* at most one hook run, bounded */
  pthread_mutex_lock (&lock);
  running = false;
  pthread_mutex_unlock (&lock);
}

uint64_t
event_count (enum rep_event ev)
{
  uint64_t n;
  pthread_mutex_lock (&lock);
  n = ev < EV_COUNT ? counts[ev] : 0;
  pthread_mutex_unlock (&lock);
  return n;
}

uint64_t
event_hook_failures (void)
{
  return __atomic_load_n (&failures, __ATOMIC_RELAXED);
}

uint64_t
event_dropped (void)
{
  pthread_mutex_lock (&lock);
  uint64_t n = dropped;
  pthread_mutex_unlock (&lock);
  return n;
}
