/* Unit test: configuration parsing and its errors.  Every bad input must
 * be refused with one message naming the source, line and key. */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "report.h"

static char last[2048];
static int nerrors;

static void
capture (const char *fmt, va_list ap)
{
  vsnprintf (last, sizeof last, fmt, ap);
  nerrors++;
}

#define GOOD_HEAD "replog = { path = \"/tmp/x.log\"; size = \"16M\"; };\n"
#define DEV_OK "devices = ( { name = \"d\"; legs = ( { site = 0; path = \"/tmp/leg\"; } ); } );\n"

struct bad { const char *text; const char *want; };

static const struct bad bads[] = {
  { GOOD_HEAD DEV_OK "bogus = 1;\n", "t:3: bogus: unknown key" },
  { "replog = { path = \"/x\"; sise = \"1M\"; };\n" DEV_OK, "t:1: sise: unknown key in replog" },
  { "replog = { path = \"/x\"; size = true; };\n" DEV_OK, "t:1: replog.size: must be a size" },
  { "replog = { path = \"/x\"; size = \"12q\"; };\n" DEV_OK, "t:1: replog.size: '12q': unknown size suffix" },
  { "replog = { path = \"/x\"; mode = \"sometimes\"; };\n" DEV_OK, "t:1: replog.mode:" },
  { "replog = { size = \"1M\"; };\n" DEV_OK, "replog.path: required" },
  { DEV_OK, "t: replog: required" },
  { GOOD_HEAD, "t: devices: required" },
  { GOOD_HEAD "sites = ( { id = 1; }, \n { id = 1; } );\n" DEV_OK, "t:3: id: site id 1 used twice" },
  { GOOD_HEAD "sites = ( { id = 99; } );\n" DEV_OK, "t:2: id: 99 out of range" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"fast\"; } );\n" DEV_OK, "t:2: policy: 'fast'" },
  { GOOD_HEAD "sites = ( { id = 1; fall_behind = \"lots 5\"; } );\n" DEV_OK, "t:2: fall_behind:" },
  { GOOD_HEAD "sites = ( { id = 1; disconnect_timeout = \"5x\"; } );\n" DEV_OK, "t:2: disconnect_timeout: '5x'" },
  { GOOD_HEAD "sites = ( { id = 1; pull_ahead = \"5000d\"; } );\n" DEV_OK, "t:2: pull_ahead: 432000000000 ms is too long" },
  { GOOD_HEAD "sites = ( { id = 1; disconnect_timeout = 18446744073709552L; } );\n" DEV_OK, "t:2: disconnect_timeout: " },
  { GOOD_HEAD "sites = ( { id = 1; colour = \"red\"; } );\n" DEV_OK, "t:2: colour: unknown key in a site" },
  { GOOD_HEAD "sites = ( { id = 1; rate = \"fast\"; } );\n" DEV_OK, "t:2: rate: 'fast': not a number" },
  { GOOD_HEAD "sites = ( { id = 1; rate = \"-1\"; } );\n" DEV_OK, "t:2: rate: '-1': a rate cannot be negative" },
  { GOOD_HEAD "sites = ( { id = 1; rate = \"10Q\"; } );\n" DEV_OK, "t:2: rate: '10Q': unknown unit" },
  { GOOD_HEAD "sites = ( { id = 1; rate = \"100M\"; } );\n" DEV_OK, "t:2: rate: '100M': say whether it is bits or bytes" },
  { GOOD_HEAD "sites = ( { id = 1; rate = \"100Mb/s\"; } );\n" DEV_OK, "t:2: rate: '100Mb/s': ambiguous unit" },
  { GOOD_HEAD "sites = ( { id = 1; rate = 1000000; } );\n" DEV_OK, "t:2: rate: must be a string with its unit" },
  { GOOD_HEAD "sites = ( { id = 0;\n rate = \"1Gbit\"; } );\n" DEV_OK, "t:2: rate: site 0 holds the local legs" },
  { GOOD_HEAD "sites = ( { id = 1; sync_deadline = \"5ms\"; } );\n" DEV_OK,
    "t:2: sync_deadline: site 1: only meaningful with policy = \"sync\" (the site is async)" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"async\";\n sync_deadline = \"5ms\"; } );\n" DEV_OK,
    "t:2: sync_deadline: site 1: only meaningful with policy = \"sync\"" },
  { GOOD_HEAD "sites = ( { id = 0; policy = \"sync\"; sync_deadline = \"5ms\"; } );\n" DEV_OK,
    "t:2: sync_deadline: site 0 holds the local legs" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"sync\";\n sync_deadline = \"5xs\"; } );\n" DEV_OK,
    "t:3: sync_deadline: '5xs': unknown time suffix" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"sync\"; sync_deadline = \"fast\"; } );\n" DEV_OK,
    "t:2: sync_deadline: 'fast'" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"sync\"; sync_deadline = true; } );\n" DEV_OK,
    "t:2: sync_deadline: must be a time" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"sync\"; sync_deadline = -1; } );\n" DEV_OK,
    "t:2: sync_deadline: must not be negative" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"sync\"; sync_deadline = \"30s\"; } );\n" DEV_OK,
    "t:2: sync_deadline: site 1: 30000 ms must be shorter than its disconnect_timeout (30000 ms)" },
  { GOOD_HEAD "sites = ( { id = 1; policy = \"sync\"; disconnect_timeout = \"2s\"; sync_deadline = \"5s\"; } );\n" DEV_OK,
    "t:2: sync_deadline: site 1: 5000 ms must be shorter than its disconnect_timeout (2000 ms)" },
  { GOOD_HEAD "devices = ( { name = \"d\";\n legs = ( { site = 0; path = \"/a\"; },\n { site = 3; path = \"/b\"; } ); } );\n",
    "t:4: site: device 'd': leg names unknown site 3" },
  { GOOD_HEAD "devices = ( { name = \"d\";\n legs = ( { site = 0; path = \"/a\"; },\n { site = 0; path = \"/b\"; } ); } );\n",
    "t:4: site: device 'd' has two legs at site 0" },
  { GOOD_HEAD "sites = ( { id = 1; } );\ndevices = ( { name = \"d\";\n legs = ( { site = 1; path = \"/a\"; } ); } );\n",
    "t:3: legs: device 'd' has no local leg" },
  { GOOD_HEAD "sites = ( { id = 1; } );\ndevices = ( { name = \"d\"; legs = ( { site = 0; path = \"/a\"; },\n { site = 1; path = \"foo://host/x\"; } ); } );\n",
    "t:4: path: unknown transport in 'foo://host/x'" },
  { GOOD_HEAD "devices = ( { name = \"d\"; legs = ( { site = 0; path = \"nbd://h/x\"; } ); } );\n",
    "must be a file or block device" },
  { GOOD_HEAD "devices = ( { name = \"a b\"; legs = ( { site = 0; path = \"/a\"; } ); } );\n", "name: device name 'a b'" },
  { GOOD_HEAD "devices = ( { name = \"d\"; legs = ( { site = 0; path = \"/a\"; } ); },\n { name = \"d\"; legs = ( { site = 0; path = \"/b\"; } ); } );\n",
    "t:3: name: device name 'd' used twice" },
  { GOOD_HEAD "devices = ( { name = \"d\"; legs = ( { site = 0; path = \"/a\";\n dirty_log = { type = \"disk\"; }; } ); } );\n",
    "dirty_log.path: a 'disk' dirty log needs a path" },
  { GOOD_HEAD "devices = ( { name = \"d\"; legs = ( { site = 0; path = \"/a\";\n dirty_log = { region_size = \"3k\"; }; } ); } );\n",
    "region_size: must be a power of two" },
  { GOOD_HEAD "devices = ( { name = \"d\"; legs = ( { site = 0; path = \"/a\";\n dirty_log = { type = \"paper\"; }; } ); } );\n",
    "t:3: dirty_log.type: 'paper'" },
  { GOOD_HEAD "devices = ( { name = \"d\"; size = \"1000\"; legs = ( { site = 0; path = \"/a\"; } ); } );\n",
    "size: device size must be a multiple of 512" },
  { GOOD_HEAD "devices = ( { name = \"d\"; legs = ( ; } );\n", "t:2: syntax error" },
  { GOOD_HEAD "devices = ( );\n", "at least one device" },
  { GOOD_HEAD DEV_OK "control = { socket = 5; };\n", "t:3: control.socket: must be a string" },
  { NULL, NULL }
};

static void
expect_bad (const char *text, const char *want)
{
  struct cfg *c;
  nerrors = 0;
  last[0] = 0;
  c = cfg_load_string (text, "t");
  if (c || nerrors != 1 || !strstr (last, want)) {
    fprintf (stderr, "config:\n%s\nwanted one error containing \"%s\", got %d: \"%s\"\n",
             text, want, nerrors, last);
    exit (1);
  }
}

static void
short_form (void)
{
  struct cfg_short *s;
  struct cfg *c;

  /* A good short form. */
  s = cfg_short_new ();
  assert (cfg_short_set (s, "log", "/tmp/l") == 0);
  assert (cfg_short_set (s, "log-size", "64M") == 0);
  assert (cfg_short_set (s, "local", "/tmp/leg") == 0);
  assert (cfg_short_set (s, "remote", "nbd+unix:///e?socket=/tmp/s") == 0);
  assert (cfg_short_set (s, "remote", "iscsi://127.0.0.1/iqn.2026-11.x:y/1") == 0);
  assert (cfg_short_set (s, "policy", "sync") == 0);
  assert (cfg_short_set (s, "fall-behind", "size 200M") == 0);
  assert (cfg_short_set (s, "region-size", "1m") == 0);
  assert (cfg_short_set (s, "disconnect-timeout", "2s") == 0);
  assert (cfg_short_set (s, "rate", "100Mbit") == 0);
  assert (cfg_short_set (s, "sync-deadline", "5ms") == 0);
  assert (cfg_short_set (s, "control", "/tmp/c.sock") == 0);
  assert ((c = cfg_short_finish (s)) != NULL);
  assert (c->replog.size == 64u << 20 && c->nsites == 3 && c->ndevices == 1);
  assert (!strcmp (c->devices[0].name, "default") && c->devices[0].nlegs == 3);
  assert (c->devices[0].legs[1].transport == TRANSPORT_NBD);
  assert (c->devices[0].legs[2].transport == TRANSPORT_ISCSI);
  assert (c->sites[1].policy == POLICY_SYNC && c->sites[1].fall_behind == FB_SIZE &&
          c->sites[1].fall_behind_value == 200u << 20 && c->sites[1].disconnect_timeout_ms == 2000);
  assert (c->sites[0].policy == POLICY_ASYNC);
  assert (c->sites[1].rate == 12500000 && c->sites[2].rate == 12500000 && c->sites[0].rate == 0);
  assert (c->sites[1].sync_deadline_ms == 5 && c->sites[2].sync_deadline_ms == 5 &&
          c->sites[0].sync_deadline_ms == 0);
  assert (c->devices[0].legs[2].dirty_log.region_size == 1u << 20);
  assert (!strcmp (c->control.socket, "/tmp/c.sock"));
  cfg_free (c);
  cfg_short_free (s);

  /* Unknown key: 1 (the plugin names it). */
  s = cfg_short_new ();
  assert (cfg_short_set (s, "lgo", "/x") == 1);
  nerrors = 0;
  assert (cfg_short_set (s, "log-size", "12q") == -1 && nerrors == 1 && strstr (last, "log-size=12q"));
  assert (cfg_short_set (s, "policy", "maybe") == -1 && strstr (last, "policy=maybe"));
  assert (cfg_short_set (s, "fall-behind", "ios x") == -1 && strstr (last, "fall-behind"));
  assert (cfg_short_set (s, "queue-depth", "0") == -1 && strstr (last, "queue-depth"));
  /* rate=: one message each, naming the key and the value. */
  nerrors = 0;
  assert (cfg_short_set (s, "rate", "-1") == -1 && nerrors == 1 && strstr (last, "rate=-1: a rate cannot be negative"));
  assert (cfg_short_set (s, "rate", "fast") == -1 && nerrors == 2 && strstr (last, "rate=fast: not a number"));
  assert (cfg_short_set (s, "rate", "10Q") == -1 && nerrors == 3 && strstr (last, "rate=10Q: unknown unit"));
  assert (cfg_short_set (s, "rate", "100M") == -1 && nerrors == 4 && strstr (last, "rate=100M: say whether"));
  nerrors = 0;
  assert (cfg_short_set (s, "sync-deadline", "5xs") == -1 && nerrors == 1 &&
          strstr (last, "sync-deadline=5xs: unknown time suffix"));
  nerrors = 0;
  assert (cfg_short_finish (s) == NULL && strstr (last, "missing log="));
  assert (cfg_short_set (s, "log", "/x") == 0);
  assert (cfg_short_finish (s) == NULL && strstr (last, "missing local="));
  assert (cfg_short_set (s, "local", "/y") == 0);
  assert (cfg_short_set (s, "remote", "gopher://h/x") == 0);
  assert (cfg_short_finish (s) == NULL && strstr (last, "unknown transport"));
  cfg_short_free (s);

  /* sync-deadline= without policy=sync: one message naming the key. */
  s = cfg_short_new ();
  assert (cfg_short_set (s, "log", "/tmp/l") == 0 && cfg_short_set (s, "local", "/tmp/leg") == 0);
  assert (cfg_short_set (s, "remote", "nbd+unix:///e?socket=/tmp/s") == 0);
  assert (cfg_short_set (s, "sync-deadline", "20ms") == 0);
  nerrors = 0;
  assert (cfg_short_finish (s) == NULL && nerrors == 1 &&
          strstr (last, "sync-deadline=20ms: only meaningful with policy=sync (the remote sites are async)"));
  assert (cfg_short_set (s, "policy", "async") == 0);
  nerrors = 0;
  assert (cfg_short_finish (s) == NULL && nerrors == 1 && strstr (last, "sync-deadline=20ms: only meaningful"));
  cfg_short_free (s);
  /* ... not shorter than disconnect-timeout: the common check names it. */
  s = cfg_short_new ();
  assert (cfg_short_set (s, "log", "/tmp/l") == 0 && cfg_short_set (s, "local", "/tmp/leg") == 0);
  assert (cfg_short_set (s, "remote", "nbd+unix:///e?socket=/tmp/s") == 0);
  assert (cfg_short_set (s, "policy", "sync") == 0 && cfg_short_set (s, "disconnect-timeout", "1s") == 0);
  assert (cfg_short_set (s, "sync-deadline", "1s") == 0);
  nerrors = 0;
  assert (cfg_short_finish (s) == NULL && nerrors == 1 &&
          strstr (last, "sync_deadline: site 1: 1000 ms must be shorter than its disconnect_timeout (1000 ms)"));
  cfg_short_free (s);

  /* config= excludes the short form. */
  s = cfg_short_new ();
  assert (cfg_short_set (s, "config", "/nonexistent.conf") == 0);
  assert (cfg_short_set (s, "log", "/x") == 0);
  assert (cfg_short_finish (s) == NULL && strstr (last, "cannot be combined"));
  cfg_short_free (s);
  s = cfg_short_new ();
  assert (cfg_short_set (s, "config", "/nonexistent.conf") == 0);
  assert (cfg_short_finish (s) == NULL && strstr (last, "/nonexistent.conf: cannot read"));
  cfg_short_free (s);
}

static void
good_file (void)
{
  struct cfg *c = cfg_load_string (
    "replog = { path = \"/l\"; offset = \"8s\"; size = \"2g\"; mode = \"open\"; commit_interval = \"2ms\"; };\n"
    "sites = ( { id = 0; policy = \"sync\"; },\n"
    "  { id = 2; policy = \"async\"; fall_behind = \"timeout 5m\"; disconnect_timeout = 10; pull_ahead = \"1m\"; queue_depth = 8;\n"
    "    rate = \"12MB/s\"; } );\n"
    "devices = ( { name = \"db\"; size = \"1G\"; legs = (\n"
    "  { site = 0; path = \"/dev/sdb\"; dirty_log = { type = \"disk\"; path = \"/b0\"; region_size = \"64k\"; }; },\n"
    "  { site = 2; path = \"nbd://h:10809/db\"; dirty_log = { type = \"nolog\"; sync = false; }; } ); },\n"
    "  { name = \"log\"; legs = ( { site = 0; path = \"/dev/sdc\"; } ); } );\n"
    "control = { socket = \"/run/x.sock\"; group = \"disk\"; };\n", "good");
  const struct cfg_site *s2;
  assert (c);
  assert (c->replog.offset == 4096 && c->replog.size == 2ull << 30 && c->replog.mode == LOG_MODE_OPEN);
  assert (c->replog.commit_interval_ms == 2);
  assert (c->nsites == 2 && cfg_site (c, 0)->policy == POLICY_SYNC);
  s2 = cfg_site (c, 2);
  assert (s2 && s2->fall_behind == FB_TIMEOUT && s2->fall_behind_value == 300000);
  assert (s2->disconnect_timeout_ms == 10000 && s2->pull_ahead_ms == 60000 && s2->queue_depth == 8);
  assert (s2->rate == 12u << 20 && cfg_site (c, 0)->rate == 0);
  assert (c->ndevices == 2 && c->devices[0].size == 1ull << 30);
  assert (c->devices[0].legs[0].dirty_log.type == DIRTYLOG_DISK);
  assert (c->devices[0].legs[1].dirty_log.type == DIRTYLOG_NOLOG && !c->devices[0].legs[1].dirty_log.sync);
  assert (cfg_leg (&c->devices[1], 0) && cfg_site (c, 1) == NULL);
  assert (!strcmp (c->control.group, "disk"));
  cfg_free (c);
  /* pull_ahead defaults to disconnect_timeout; site 0 implied. */
  c = cfg_load_string (GOOD_HEAD "sites = ( { id = 1; disconnect_timeout = \"7s\"; } );\n" DEV_OK, "d");
  assert (c && cfg_site (c, 0) && cfg_site (c, 1)->pull_ahead_ms == 7000);
  assert (cfg_site (c, 0)->disconnect_timeout_ms == 30000 && cfg_site (c, 0)->queue_depth == 32);
  assert (cfg_site (c, 1)->rate == 0);                 /* no limit by default */
  cfg_free (c);
  c = cfg_load_string (GOOD_HEAD "sites = ( { id = 1; rate = 0; }, { id = 2; rate = \"1.5Gbit\"; } );\n" DEV_OK, "r");
  assert (c && cfg_site (c, 1)->rate == 0 && cfg_site (c, 2)->rate == 187500000);
  cfg_free (c);
  /* sync_deadline: a time on a sync site; none by default; 0 (none) accepted anywhere. */
  c = cfg_load_string (GOOD_HEAD "sites = ( { id = 0; sync_deadline = 0; },\n"
                       "  { id = 1; policy = \"sync\"; sync_deadline = \"20ms\"; },\n"
                       "  { id = 2; policy = \"async\"; sync_deadline = 0; }, { id = 3; policy = \"sync\"; } );\n"
                       DEV_OK, "sd");
  assert (c && cfg_site (c, 1)->sync_deadline_ms == 20 && cfg_site (c, 0)->sync_deadline_ms == 0 &&
          cfg_site (c, 2)->sync_deadline_ms == 0 && cfg_site (c, 3)->sync_deadline_ms == 0);
  cfg_free (c);
}

/* Every example in conf/ parses. */
static int
examples (void)
{
  const char *dir = getenv ("CONFDIR");
  DIR *d;
  struct dirent *e;
  int n = 0;

  if (!dir)
    dir = "conf";
  if (!(d = opendir (dir))) {
    fprintf (stderr, "cannot open %s\n", dir);
    exit (1);
  }
  while ((e = readdir (d))) {
    char path[4096];
    struct cfg *c;
    size_t l = strlen (e->d_name);
    if (l < 6 || strcmp (e->d_name + l - 5, ".conf"))
      continue;
    snprintf (path, sizeof path, "%s/%s", dir, e->d_name);
    nerrors = 0;
    c = cfg_load_file (path);
    if (!c) {
      fprintf (stderr, "example %s does not parse: %s\n", path, last);
      exit (1);
    }
    printf ("example %s: %zu device(s), %zu site(s)\n", e->d_name, c->ndevices, c->nsites);
    cfg_free (c);
    n++;
  }
  closedir (d);
  return n;
}

int
main (void)
{
  struct report_sink sink = { .error = capture, .debug = NULL };
  int i, n;

  report_set_sink (&sink);
  for (i = 0; bads[i].text; i++)
    expect_bad (bads[i].text, bads[i].want);
  short_form ();
  good_file ();
  n = examples ();
  if (n == 0) {
    fprintf (stderr, "no example configurations found\n");
    return 1;
  }
  printf ("config: %d bad inputs refused with file:line:key, short form, %d examples\n", i, n);
  return 0;
}
