/* journal-mkleg: build a leg image for tests/test-journal-replay.sh with
 * the journal's own writer (src/journal.c, src/journal-enc.c).
 *
 *   journal-mkleg LEG EXPECTED MODE SEED
 *   journal-mkleg --replay-link URI
 *
 * LEG gets a 1 MiB device with random bytes, 2 MiB of room and an end
 * label (MODE nolabel: none).  MODE journal: a 1 MiB journal; 30 batches
 * written, applied in place and released; 3 more written and not released
 * (the first of them half applied in place: a crash in mid-apply); a 4th
 * cut short after its first 4096 bytes (a torn write).  EXPECTED gets the
 * device's bytes a replay must leave (the first 33 batches applied; for
 * nojournal and nolabel: the device as written).  Prints the leg's size
 * and the coalescing figures.
 *
 * --replay-link: replay the journal of the NBD leg at URI through the
 * link layer's connection (jnl_io_link over link_nbd_ops), as the
 * primary's connect hook will; prints the summary line.
 */
#include <config.h>
#undef NDEBUG
#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal-leg.h"
#include "link.h"
#include "units.h"

#define DEV   (1u << 20)
#define ROOM  (2u << 20)
#define RING  (1u << 20)

static uint8_t model[DEV], scratch[65536], pool[20 * 8192];

static int
replay_link (const char *uri)
{
#ifdef HAVE_LIBNBD
  struct link_params lp = { .deadline_ns = mono_ns () + 10000000000u };
  struct jnl_replay_sum sum;
  struct link_info info;
  struct jnl_super sb;
  struct jnl_geom g;
  struct jnl_link k = { &link_nbd_ops, NULL, 10000000000u };
  struct jnl_io io;
  char err[512], line[512];
  int rc;

  if (!(k.conn = link_nbd_ops.connect (uri, &lp, &info, err, sizeof err))) {
    fprintf (stderr, "connect %s: %s\n", uri, err);
    return 1;
  }
  jnl_io_link (&io, &k);
  if ((rc = jnl_locate (&io, info.size, &g, &sb, err, sizeof err)) != 0 ||
      (rc = jnl_replay (&io, &sb, &sum, err, sizeof err)) != 0)
    fprintf (stderr, "%s: %s\n", uri, err);
  else {
    jnl_replay_str (&sum, line, sizeof line);
    printf ("%s\n", line);
  }
  link_nbd_ops.close (k.conn);
  return rc != 0;
#else
  fprintf (stderr, "built without libnbd\n");
  (void) uri;
  return 77;
#endif
}

int
main (int argc, char **argv)
{
  struct jnl_enc *e;
  struct jnl_writer w;
  struct jnl_super sb;
  struct tl_leg l;
  uint64_t seq = 1, len, k, in = 0, out = 0, bpos, spos;
  uint32_t rng;
  void *b, *sbb;
  int fd, efd;

  if (argc == 3 && !strcmp (argv[1], "--replay-link"))
    return replay_link (argv[2]);
  if (argc != 5 || (strcmp (argv[3], "journal") && strcmp (argv[3], "nojournal") &&
                    strcmp (argv[3], "nolabel"))) {
    fprintf (stderr, "usage: journal-mkleg LEG EXPECTED journal|nojournal|nolabel SEED\n");
    return 2;
  }
  rng = (uint32_t) strtoul (argv[4], NULL, 10) | 1;
  assert ((fd = open (argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644)) >= 0);
  tl_make_leg (&l, fd, DEV, ROOM, strcmp (argv[3], "nolabel") != 0, rng);
  assert (pread (fd, model, DEV, 0) == DEV);
  if (!strcmp (argv[3], "journal")) {
    tl_format (&l, RING, 0, &sb);
    assert (jnl_writer_init (&w, &sb) == 0 && (e = jnl_enc_new ()));
    for (k = 1; k <= 34; k++) {
      struct jnl_enc_stats st;
      /* a hot set: overwrites coalesce */
      tl_random_entries (e, k <= 33 ? model : scratch, k <= 33 ? DEV : sizeof scratch,
                         20, 8192, &seq, &rng, pool);
      assert (jnl_enc_finish (e, l.group, l.device, &b, &len, &st) == 0);
      jnl_enc_reset (e);
      in += st.in_bytes;
      out += st.out_bytes;
      if (k == 34) {                                /* torn: its first block only */
        assert (posix_memalign (&sbb, 4096, 4096) == 0);
        assert (jnl_writer_place (&w, b, len, sbb, &bpos, &spos) == 0);
        assert (pwrite (fd, b, 4096, (off_t) bpos) == 4096);
        free (sbb);
      }
      else
        tl_write_batch (&l, &w, b, len);
      if (k <= 30 || k == 31)
        tl_apply (&l, b, k <= 30 ? UINT32_MAX : 7);
      if (k <= 30) {
        assert (l.io.flush (l.io.opaque) == 0);
        assert (jnl_writer_applied (&w, k) == 0);
      }
      free (b);
    }
    jnl_writer_destroy (&w);
    jnl_enc_free (e);
    printf ("coalescing: %" PRIu64 " data bytes in, %" PRIu64 " in the batches\n", in, out);
  }
  assert ((efd = open (argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0);
  assert (write (efd, model, DEV) == DEV);
  close (efd);
  assert (fsync (fd) == 0);
  close (fd);
  printf ("leg %s: %" PRIu64 " bytes, device %u bytes\n", argv[1], l.leg_size, DEV);
  return 0;
}
