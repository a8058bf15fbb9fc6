//! The caching allocator behind every CUDA buffer: freed blocks go to
//! size-bucketed free lists of their device (every op runs on the device's
//! one stream, so a block freed by one op and handed to the next is ordered
//! by the stream; no event is needed), and a request takes a cached block of
//! its bucket before asking the driver. When the driver is out of memory the
//! cache is emptied and the request retried, as PyTorch's allocator does.
//!
//! The bookkeeping ([`BucketCache`]) is generic over the block type so its
//! rules are tested on the CPU.

use std::collections::HashMap;

/// Requests up to this many bytes are rounded to [`SMALL_GRANULE`]; larger ones to [`LARGE_GRANULE`].
pub const SMALL_LIMIT: usize = 1 << 20;
/// Rounding of small requests (bytes).
pub const SMALL_GRANULE: usize = 512;
/// Rounding of large requests (bytes).
pub const LARGE_GRANULE: usize = 2 << 20;

/// The bucket (allocation size in bytes) a request of `bytes` is served from.
/// Zero-byte requests get the smallest bucket (cuMemAlloc rejects zero).
pub fn bucket_size(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= SMALL_LIMIT {
        bytes.div_ceil(SMALL_GRANULE) * SMALL_GRANULE
    } else {
        bytes.div_ceil(LARGE_GRANULE) * LARGE_GRANULE
    }
}

/// Counters of a cache, for `doctor` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests served from a free list.
    pub hits: u64,
    /// Requests that went to the driver.
    pub misses: u64,
    /// Blocks currently held in free lists.
    pub cached_blocks: usize,
    /// Bytes currently held in free lists.
    pub cached_bytes: usize,
}

/// Free lists of blocks by bucket size. Blocks of one bucket are
/// interchangeable; the most recently freed is reused first (warm in L2).
#[derive(Debug)]
pub struct BucketCache<B> {
    free: HashMap<usize, Vec<B>>,
    stats: CacheStats,
}

impl<B> Default for BucketCache<B> {
    fn default() -> Self {
        BucketCache { free: HashMap::new(), stats: CacheStats::default() }
    }
}

impl<B> BucketCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cached block for a request of `bytes` (and its bucket size), or
    /// `None` (a miss: allocate a block of the returned bucket size).
    pub fn take(&mut self, bytes: usize) -> (Option<B>, usize) {
        let bucket = bucket_size(bytes);
        match self.free.get_mut(&bucket).and_then(Vec::pop) {
            Some(b) => {
                self.stats.hits += 1;
                self.stats.cached_blocks -= 1;
                self.stats.cached_bytes -= bucket;
                (Some(b), bucket)
            }
            None => {
                self.stats.misses += 1;
                (None, bucket)
            }
        }
    }

    /// Return a block of bucket size `bucket` (as [`BucketCache::take`] reported it).
    pub fn give(&mut self, bucket: usize, block: B) {
        debug_assert_eq!(bucket, bucket_size(bucket), "not a bucket size");
        self.free.entry(bucket).or_default().push(block);
        self.stats.cached_blocks += 1;
        self.stats.cached_bytes += bucket;
    }

    /// Remove and return every cached block (to free them).
    pub fn drain(&mut self) -> Vec<B> {
        self.stats.cached_blocks = 0;
        self.stats.cached_bytes = 0;
        self.free.drain().flat_map(|(_, v)| v).collect()
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_small_and_large_requests() {
        assert_eq!(bucket_size(0), 512);
        assert_eq!(bucket_size(1), 512);
        assert_eq!(bucket_size(512), 512);
        assert_eq!(bucket_size(513), 1024);
        assert_eq!(bucket_size(SMALL_LIMIT), SMALL_LIMIT);
        assert_eq!(bucket_size(SMALL_LIMIT + 1), LARGE_GRANULE);
        assert_eq!(bucket_size(5 << 20), 6 << 20);
        for bytes in [1usize, 700, 4096, 1 << 20, (1 << 20) + 3, 123_456_789] {
            let b = bucket_size(bytes);
            assert!(b >= bytes && bucket_size(b) == b, "{bytes} -> {b}");
        }
    }

    #[test]
    fn freed_blocks_are_reused_by_bucket_and_counted() {
        let mut cache = BucketCache::<&'static str>::new();
        let (hit, bucket) = cache.take(1000);
        assert_eq!((hit, bucket), (None, 1024));
        cache.give(bucket, "a");
        cache.give(bucket_size(3000), "b");
        assert_eq!(cache.stats().cached_blocks, 2);
        assert_eq!(cache.stats().cached_bytes, 1024 + 3072);
        // A request of another size in the same bucket gets the block; a different bucket does not.
        assert_eq!(cache.take(600), (Some("a"), 1024));
        assert_eq!(cache.take(600), (None, 1024));
        assert_eq!(cache.take(2600).0, Some("b"));
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.cached_blocks, s.cached_bytes), (2, 2, 0, 0));
    }

    #[test]
    fn most_recently_freed_block_is_reused_first_and_drain_empties() {
        let mut cache = BucketCache::<u32>::new();
        for id in 0..3 {
            cache.give(bucket_size(10), id);
        }
        assert_eq!(cache.take(10).0, Some(2));
        let mut rest = cache.drain();
        rest.sort();
        assert_eq!(rest, vec![0, 1]);
        assert_eq!(cache.stats().cached_bytes, 0);
        assert_eq!(cache.take(10).0, None);
    }
}
