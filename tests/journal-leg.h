/* journal-leg.h: test helpers for the agentless journal (src/journal.c):
 * a labelled leg in a file, random batches with a byte-array model of
 * what they leave, and the writer's cycle (place, write, flush). */
#ifndef TESTS_JOURNAL_LEG_H
#define TESTS_JOURNAL_LEG_H

#include <stdbool.h>
#include <stdint.h>

#include "journal.h"

struct tl_leg {
  int fd;
  struct jnl_io io;
  uint64_t dev_size, leg_size, room_end;
  uint8_t group[16], device[16];
};

/* A leg in file fd: dev_size bytes of device, room bytes between the
 * device and the label's bitmap, an end label of a new group and device
 * (none when !label).  The device's bytes are random (seed). */
void tl_make_leg (struct tl_leg *l, int fd, uint64_t dev_size, uint64_t room, bool label,
                  unsigned seed);
/* Format a journal of ring_size (max_batch 0: the default). */
void tl_format (struct tl_leg *l, uint64_t ring_size, uint64_t max_batch, struct jnl_super *sb);

/* xorshift */
uint32_t tl_rand (uint32_t *s);

/* Add nent random entries (data or zeroes, some overlapping) over the
 * device to e, in log order from *seq on, and apply them to model
 * (dev_size bytes).  The data lives in pool (nent * max_len bytes) until
 * the batch is finished. */
void tl_random_entries (struct jnl_enc *e, uint8_t *model, uint64_t dev_size, unsigned nent,
                        uint32_t max_len, uint64_t *seq, uint32_t *rng, uint8_t *pool);
/* Finish e into a batch (group/device of l); *len its length. */
void *tl_finish (const struct tl_leg *l, struct jnl_enc *e, uint64_t *len);
/* The writer's cycle for one batch: place, write the batch and the
 * superblock, one flush, flushed. */
void tl_write_batch (struct tl_leg *l, struct jnl_writer *w, void *batch, uint64_t len);
/* Apply a batch in place (its table, no flush), the first n entries only
 * (UINT32_MAX: all): an in-place apply, or one cut short. */
void tl_apply (struct tl_leg *l, const void *batch, uint32_t n);

#endif
