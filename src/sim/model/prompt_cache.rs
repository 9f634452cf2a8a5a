//! llama-server's prompt cache: what each slot's KV cache holds, the
//! host-memory cache of earlier prompts (`--cache-ram`), and which free slot
//! a new request gets. Pure: a struct of token sequences, no clock.
//!
//! The rules copy llama.cpp's `tools/server/server-context.cpp`
//! (`get_available_slot`) and `server-task.cpp` (`server_prompt_cache`):
//!
//! 1. **Slot by similarity.** Among the free slots whose cache is not
//!    empty, the one whose cached tokens share the longest common prefix
//!    with the prompt, as a fraction of the prompt's length, if that
//!    fraction exceeds `--slot-prompt-similarity` (default 0.1). When the
//!    slot would keep less than half of its cache (`f_keep < 0.5`), its
//!    content is saved to the host cache first.
//! 2. **Else the least recently used free slot** (ties: the last one),
//!    whose content is saved to the host cache.
//! 3. **Host cache.** A save copies the slot's content into the host cache;
//!    then the host entry that shares a longer prefix with the prompt than
//!    the slot's own content (both as a share of the entry, `f_keep`, and
//!    of the prompt, `sim`; entries that would keep under a quarter are
//!    skipped) moves into the slot, else the slot keeps what it had. Saving
//!    drops entries the new one contains; beyond the token budget the
//!    oldest entries go.
//! 4. **Reuse.** With `cache_prompt` (the default), the prompt's common
//!    prefix with the slot's cache is not processed again: that is
//!    `timings.cache_n`; at least one prompt token is always processed.
//!
//! A slot's cache is its last prompt plus the tokens it generated. The
//! sim's generated text cannot be mapped back to the tokens of the next
//! turn's assistant message, so generated tokens never match: a later turn
//! reuses up to the end of the previous prompt (the real server also
//! reuses the reply).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::sim::tokens::{common_prefix, Token};

/// Most prompts in the host cache. The real server bounds only bytes; the
/// sim also bounds the count, since every lookup scans the entries (with
/// 8 GiB of tiny prompts that would be tens of thousands per request).
const MAX_HOST_PROMPTS: usize = 256;

/// Settings of the prompt cache.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheParams {
    /// `--slot-prompt-similarity`: least shared-prefix share for a slot to
    /// be picked by similarity; 0 disables the similarity pass.
    pub similarity: f32,
    /// Host-memory cache budget in tokens (`--cache-ram` MiB over the KV
    /// bytes per token); 0 disables it, `u64::MAX` is unlimited.
    pub host_tokens: u64,
}

impl Default for CacheParams {
    fn default() -> Self {
        CacheParams {
            similarity: 0.1,
            host_tokens: 0,
        }
    }
}

/// One cached sequence: the first `kept` tokens of `prompt`, then
/// `generated` tokens that match nothing.
#[derive(Clone, Debug, Default)]
struct Cached {
    prompt: Arc<[Token]>,
    kept: usize,
    generated: u32,
}

impl Cached {
    fn len(&self) -> u64 {
        self.kept as u64 + self.generated as u64
    }

    fn lcp(&self, tokens: &[Token]) -> usize {
        common_prefix(&self.prompt[..self.kept], tokens)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, Default)]
struct Slot {
    cache: Cached,
    /// Release order (0 = never used), for LRU.
    last_used: u64,
}

/// Where a request starts: its slot and the prompt tokens it reuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub slot: usize,
    /// Prompt tokens already in the slot (`timings.cache_n`).
    pub cached: u32,
}

/// The slots' caches and the host cache of one server.
#[derive(Debug)]
pub struct PromptCache {
    params: CacheParams,
    slots: Vec<Slot>,
    host: VecDeque<Cached>,
    host_len: u64,
    clock: u64,
}

// === impl PromptCache ===

impl PromptCache {
    pub fn new(slots: usize, params: CacheParams) -> PromptCache {
        PromptCache {
            params,
            slots: vec![Slot::default(); slots.max(1)],
            host: VecDeque::new(),
            host_len: 0,
            clock: 0,
        }
    }

    /// Picks one of the `free` slots for `prompt` (rules 1-3) and says how
    /// much of it is reused (rule 4; nothing unless `reuse`). `None` when no
    /// slot is free.
    pub fn assign(&mut self, free: &[usize], prompt: &[Token], reuse: bool) -> Option<Assigned> {
        let n = prompt.len().max(1) as f32;
        let mut best: Option<(usize, f32)> = None;
        if self.params.similarity > 0.0 {
            for &i in free {
                let c = &self.slots.get(i)?.cache;
                if c.is_empty() {
                    continue;
                }
                let sim = c.lcp(prompt) as f32 / n;
                if sim > best.map_or(0.0, |b| b.1) && sim > self.params.similarity {
                    best = Some((i, sim));
                }
            }
        }
        let (slot, save) = match best {
            Some((i, sim)) => {
                let keep = sim * n / self.slots[i].cache.len().max(1) as f32;
                (i, keep < 0.5)
            }
            None => {
                let mut lru: Option<usize> = None;
                for &i in free {
                    if i >= self.slots.len() {
                        continue;
                    }
                    if lru.is_none_or(|l| self.slots[i].last_used <= self.slots[l].last_used) {
                        lru = Some(i);
                    }
                }
                (lru?, true)
            }
        };
        if save && self.params.host_tokens > 0 && !self.slots[slot].cache.is_empty() {
            let own = self.slots[slot].cache.clone();
            self.save(own.clone());
            if let Some(entry) = self.load(prompt, &own) {
                self.slots[slot].cache = entry;
            }
        }
        let cached = if reuse && !prompt.is_empty() {
            // At least one prompt token is evaluated.
            self.slots[slot].cache.lcp(prompt).min(prompt.len() - 1)
        } else {
            0
        };
        Some(Assigned {
            slot,
            cached: cached.min(u32::MAX as usize) as u32,
        })
    }

    /// A request left `slot` with the first `kept` tokens of `prompt` and
    /// `generated` more in its KV cache.
    pub fn release(&mut self, slot: usize, prompt: Arc<[Token]>, kept: usize, generated: u32) {
        self.clock += 1;
        if let Some(s) = self.slots.get_mut(slot) {
            let kept = kept.min(prompt.len());
            s.cache = Cached {
                prompt,
                kept,
                generated,
            };
            s.last_used = self.clock;
        }
    }

    /// A restart: every slot and the host cache empty.
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            *s = Slot::default();
        }
        self.host.clear();
        self.host_len = 0;
    }

    /// Tokens held in the host cache.
    pub fn host_tokens(&self) -> u64 {
        self.host_len
    }

    /// Tokens held in `slot`'s KV cache.
    pub fn slot_tokens(&self, slot: usize) -> u64 {
        self.slots.get(slot).map_or(0, |s| s.cache.len())
    }

    /// Rule 3, saving: drop entries `entry` contains, add it, evict the
    /// oldest beyond the budget.
    fn save(&mut self, entry: Cached) {
        let new = &entry.prompt[..entry.kept];
        let before = self.host.len();
        self.host.retain(|e| {
            let contained = e.lcp(new) == e.kept && (e.generated == 0 || e.kept == new.len());
            !(contained && e.len() <= entry.len())
        });
        if self.host.len() != before {
            self.host_len = self.host.iter().map(Cached::len).sum();
        }
        self.host_len += entry.len();
        self.host.push_back(entry);
        while self.host_len > self.params.host_tokens || self.host.len() > MAX_HOST_PROMPTS {
            match self.host.pop_front() {
                Some(e) => self.host_len -= e.len(),
                None => break,
            }
        }
    }

    /// Rule 3, loading: the entry that beats the slot's own content for
    /// `prompt`, taken out of the host cache.
    fn load(&mut self, prompt: &[Token], own: &Cached) -> Option<Cached> {
        let n = prompt.len().max(1) as f32;
        let lcp = own.lcp(prompt) as f32;
        let mut keep_best = if own.is_empty() {
            -1.0 // an empty slot: any entry wins
        } else {
            lcp / own.len() as f32
        };
        let mut sim_best = lcp / n;
        let mut best = None;
        for (i, e) in self.host.iter().enumerate() {
            let lcp = e.lcp(prompt) as f32;
            let keep = lcp / e.len().max(1) as f32;
            let sim = lcp / n;
            if keep < 0.25 {
                continue;
            }
            if keep_best < keep && sim_best < sim {
                (keep_best, sim_best, best) = (keep, sim, Some(i));
            }
        }
        let e = self.host.remove(best?)?;
        self.host_len -= e.len();
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(prefix: u32, shared: usize, own: u32, len: usize) -> Arc<[Token]> {
        (0..len)
            .map(|i| {
                if i < shared {
                    prefix
                } else {
                    own * 1000 + i as u32
                }
            })
            .collect()
    }

    fn params(host: u64) -> CacheParams {
        CacheParams {
            similarity: 0.1,
            host_tokens: host,
        }
    }

    #[test]
    fn a_returning_prompt_gets_its_slot_and_reuses_the_prefix() {
        let mut c = PromptCache::new(2, params(0));
        let a = seq(7, 0, 1, 100);
        let first = c.assign(&[0, 1], &a, true).unwrap();
        // Never used: LRU ties go to the last slot, as in llama-server.
        assert_eq!(first, Assigned { slot: 1, cached: 0 });
        c.release(1, a.clone(), 100, 20);
        let mut a2: Vec<Token> = a.to_vec();
        a2.extend(5000..5050);
        let again = c.assign(&[0, 1], &a2, true).unwrap();
        assert_eq!(
            again,
            Assigned {
                slot: 1,
                cached: 100
            }
        );
        // cache_prompt false: same slot, nothing reused.
        assert_eq!(c.assign(&[0, 1], &a2, false).unwrap().cached, 0);
        // An identical prompt still processes one token.
        assert_eq!(c.assign(&[1], &a, true).unwrap().cached, 99);
    }

    #[test]
    fn a_dissimilar_prompt_takes_the_least_recently_used_slot() {
        let mut c = PromptCache::new(2, params(0));
        c.release(0, seq(1, 0, 1, 50), 50, 0);
        c.release(1, seq(2, 0, 2, 50), 50, 0);
        let other = seq(3, 0, 3, 50);
        assert_eq!(c.assign(&[0, 1], &other, true).unwrap().slot, 0);
        assert_eq!(c.assign(&[1], &other, true).unwrap().slot, 1);
        assert_eq!(c.assign(&[], &other, true), None);
    }

    #[test]
    fn the_host_cache_brings_back_an_evicted_conversation() {
        let mut c = PromptCache::new(1, params(10_000));
        let a = seq(0, 0, 1, 400);
        let b = seq(0, 0, 2, 400);
        c.assign(&[0], &a, true);
        c.release(0, a.clone(), 400, 10);
        // b evicts a from the only slot; a goes to host memory.
        assert_eq!(c.assign(&[0], &b, true).unwrap().cached, 0);
        c.release(0, b.clone(), 400, 10);
        assert_eq!(c.host_tokens(), 410);
        let mut a2 = a.to_vec();
        a2.extend(9000..9040);
        // a returns: the slot (holding b) is saved, a is loaded.
        assert_eq!(c.assign(&[0], &a2, true).unwrap().cached, 400);
        assert_eq!(c.host_tokens(), 410); // b in, a out
        assert_eq!(c.slot_tokens(0), 410);
    }

    #[test]
    fn the_host_cache_is_bounded_and_off_at_zero_and_cleared_by_a_restart() {
        let mut c = PromptCache::new(1, params(1000));
        for k in 0..10u32 {
            let p = seq(0, 0, k + 1, 300);
            c.assign(&[0], &p, true);
            c.release(0, p, 300, 0);
            assert!(c.host_tokens() <= 1000);
        }
        assert_eq!(c.host_tokens(), 900);
        c.clear();
        assert_eq!((c.host_tokens(), c.slot_tokens(0)), (0, 0));
        let mut off = PromptCache::new(1, params(0));
        for k in 0..3u32 {
            let p = seq(0, 0, k + 1, 300);
            off.assign(&[0], &p, true);
            off.release(0, p, 300, 0);
        }
        assert_eq!(off.host_tokens(), 0);
    }

    #[test]
    fn a_shared_system_prompt_is_reused_across_conversations() {
        let mut c = PromptCache::new(1, params(0));
        let a = seq(42, 300, 1, 320);
        let b = seq(42, 300, 2, 320);
        c.assign(&[0], &a, true);
        c.release(0, a, 320, 5);
        assert_eq!(c.assign(&[0], &b, true).unwrap().cached, 300);
    }

    #[test]
    fn a_saved_slot_keeps_its_own_prefix_when_no_entry_is_better() {
        // The slot shares 300 of its 1,500 tokens with the prompt: picked by
        // similarity, saved (f_keep 0.2 < 0.5), nothing better in the host
        // cache, so it keeps its content and the 300 are reused.
        let mut c = PromptCache::new(1, params(100_000));
        let long = seq(42, 300, 1, 1500);
        c.release(0, long, 1500, 0);
        let b = seq(42, 300, 2, 320);
        assert_eq!(c.assign(&[0], &b, true).unwrap().cached, 300);
        assert_eq!(c.host_tokens(), 1500);
    }

    #[test]
    fn saving_drops_entries_the_new_one_contains() {
        let mut c = PromptCache::new(1, params(100_000));
        let short = seq(0, 0, 1, 100);
        let mut long = short.to_vec();
        long.extend(7000..7100);
        let long: Arc<[Token]> = long.into();
        c.release(0, short.clone(), 100, 0);
        c.assign(&[0], &seq(0, 0, 9, 100), true); // saves short
        c.release(0, long.clone(), 200, 0);
        c.assign(&[0], &seq(0, 0, 8, 100), true); // saves long: short goes
        assert_eq!(c.host_tokens(), 200);
    }
}
