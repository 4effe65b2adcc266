/* bitmap.h: an in-memory region bitmap (one bit per region of a leg).
 * Bits are set with atomic operations from any thread.  The dirty-log
 * types (core, disk) build on it. */
#ifndef REPLICATOR_BITMAP_H
#define REPLICATOR_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

struct bitmap {
  uint64_t size;                 /* bytes covered */
  uint64_t region_size;          /* power of two */
  uint64_t nbits;
  uint64_t *words;
  /* Change tracking for a persistent copy (dirtylog.c): one flag per
   * page of words_per_page words, set after a bit of the page changed. */
  uint8_t *changed;
  uint64_t npages, words_per_page;
  uint32_t any_changed;
};

/* NULL on ENOMEM.  region_size must be a power of two. */
struct bitmap *bitmap_new (uint64_t size, uint64_t region_size);
void bitmap_free (struct bitmap *b);
/* Track changes per page of words_per_page words: -1 on ENOMEM. */
int bitmap_track_pages (struct bitmap *b, uint64_t words_per_page);
/* Mark every region touching [off, off + len). */
void bitmap_set_range (struct bitmap *b, uint64_t off, uint64_t len);
void bitmap_set_all (struct bitmap *b);
uint64_t bitmap_count (const struct bitmap *b);
bool bitmap_test (const struct bitmap *b, uint64_t bit);
/* Clear bits [first, first + n). */
void bitmap_clear_bits (struct bitmap *b, uint64_t first, uint64_t n);
/* The first set bit >= from, or nbits. */
uint64_t bitmap_next_set (const struct bitmap *b, uint64_t from);
/* dst |= src, src = 0 (same geometry); returns the bits moved. */
uint64_t bitmap_merge (struct bitmap *dst, struct bitmap *src);

#endif
