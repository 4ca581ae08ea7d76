using System.Runtime.CompilerServices;
using AttributionFleet.Engine.Rules;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Attribution;

/// <summary>
/// What a reference tape depends on: the model (one id per loaded model copy, so each precision and device is its own),
/// the reference (kind or text), its length, and the rule options. Not the width of the pass that uses it: a tape is
/// recorded at its own length and padded to each pass's width when replayed (<see cref="TapeReplayOps"/>).
/// </summary>
public readonly record struct ReferenceKey(long Model, string Reference, int Length, SoftmaxRuleKind SoftmaxRule, bool Promote)
{
    private static readonly ConditionalWeakTable<Models.ITextModel, object> Ids = new();
    private static long _next;

    /// <summary>A process-unique id for a model object (weakly held: the id never keeps the model alive).</summary>
    public static long ModelId(Models.ITextModel model) =>
        (long)Ids.GetValue(model, _ => Interlocked.Increment(ref _next));
}

/// <summary>
/// Reference tapes kept across batches and jobs under a memory budget. A tape is exact to reuse (the reference half has
/// no gradient and depends only on its key). One tape of a bert-base-sized model at 128 tokens holds ~61 MB in float32
/// (per layer 9·L·H for Q, Kᵀ, V, the two LayerNorms' centered references and the GELU input, and 2·heads·L² for the scores and the
/// softmax), so the default budget (1 GiB) keeps about sixteen lengths of such a model at 128 tokens (more of shorter ones).
/// <para>
/// Which tapes stay: while there is room, every new one. When a new tape would need room, the least recently used go
/// first, but only if the new tape's key has been asked for more often than each of them (counts of lookups, halved
/// every <see cref="AgingPeriod"/> lookups so that what stopped being asked for fades); otherwise the new tape serves
/// its pass and is freed. Plain least-recently-used evicts exactly the tapes a repeated job needs next when its lengths
/// outnumber what fits (a job visits its lengths in the same order each time): measured on a 64-text job of 49 lengths,
/// the job run again found none of its tapes. Which tapes are kept never changes a result, only what it costs: a
/// replayed tape is bit-identical to one recorded again.
/// </para>
/// </summary>
public sealed class ReferenceCache
{
    public const long DefaultBudgetBytes = 1L << 30;

    /// <summary>Environment variable: the shared cache's budget in MiB (0: none), for processes that set no other (the worker).</summary>
    public const string BudgetVariable = "FLEET_REFERENCE_CACHE_MB";

    /// <summary>The process's cache (the CLI and the worker use this one; <see cref="BudgetBytes"/> or <see cref="BudgetVariable"/> configures it).</summary>
    public static ReferenceCache Shared { get; } = new(BudgetFromEnvironment());

    private static long BudgetFromEnvironment()
    {
        var value = Environment.GetEnvironmentVariable(BudgetVariable);
        if (string.IsNullOrWhiteSpace(value)) return DefaultBudgetBytes;
        if (long.TryParse(value, out long mb) && mb >= 0) return mb << 20;
        // A static initializer cannot fail cleanly: say so in one line and keep the default.
        Console.Error.WriteLine($"fleet: {BudgetVariable} must be a number of MiB (0 or more), got '{value}'; using the default {DefaultBudgetBytes >> 20} MiB");
        return DefaultBudgetBytes;
    }

    /// <summary>Lookups between two halvings of every key's count.</summary>
    public const int AgingPeriod = 4096;

    private readonly LinkedList<(ReferenceKey Key, ReferenceTape Tape)> _order = new();
    private readonly Dictionary<ReferenceKey, LinkedListNode<(ReferenceKey Key, ReferenceTape Tape)>> _index = new();
    private readonly Dictionary<ReferenceKey, int> _asked = new();
    private long _budget, _bytes, _hits, _misses;
    private int _sinceAging;

    public ReferenceCache(long budgetBytes) => _budget = Math.Max(0, budgetBytes);

    /// <summary>Bytes the cache may hold; lowering it evicts at once. 0 keeps nothing (every tape is used once and freed).</summary>
    public long BudgetBytes
    {
        get { lock (_order) return _budget; }
        set { lock (_order) { _budget = Math.Max(0, value); Trim(0); } }
    }

    public long Bytes { get { lock (_order) return _bytes; } }
    public int Count { get { lock (_order) return _index.Count; } }
    public long Hits => Interlocked.Read(ref _hits);
    public long Misses => Interlocked.Read(ref _misses);

    /// <summary>Hits / (hits + misses) since the last <see cref="ResetCounters"/>; 0 before any lookup.</summary>
    public double HitRate { get { long h = Hits, m = Misses; return h + m == 0 ? 0 : (double)h / (h + m); } }

    /// <summary>How often <paramref name="key"/> was looked up, as the admission counts it (halved every <see cref="AgingPeriod"/> lookups).</summary>
    internal int Asked(ReferenceKey key) { lock (_order) return _asked.GetValueOrDefault(key); }

    /// <summary>The keys held now, most recently used first (for tests).</summary>
    internal IReadOnlyList<ReferenceKey> Keys { get { lock (_order) return _order.Select(e => e.Key).ToList(); } }

    /// <summary>The tapes held now, most recently used first (for tests).</summary>
    internal IReadOnlyList<ReferenceTape> Tapes { get { lock (_order) return _order.Select(e => e.Tape).ToList(); } }

    public void ResetCounters()
    {
        Interlocked.Exchange(ref _hits, 0);
        Interlocked.Exchange(ref _misses, 0);
    }

    /// <summary>Frees every tape (those in use are freed when their pass ends).</summary>
    public void Clear()
    {
        lock (_order)
        {
            foreach (var (_, tape) in _order) tape.Evict();
            _order.Clear();
            _index.Clear();
            _bytes = 0;
        }
    }

    /// <summary>
    /// The tape for <paramref name="key"/>, recorded by <paramref name="record"/> on a miss, acquired for the caller:
    /// call <see cref="ReferenceTape.Release"/> when the pass is done. A tape larger than the budget is not kept.
    /// </summary>
    internal ReferenceTape Acquire(ReferenceKey key, Func<ReferenceTape> record)
    {
        if (TryAcquire(key) is { } hit) return hit;
        // Recorded outside the lock: another pass may record the same key meanwhile; the first one stored wins.
        var tape = record();
        tape.Acquire();
        Add(key, tape);
        return tape;
    }

    /// <summary>The cached tape, acquired for the caller (a hit), or null (a miss).</summary>
    internal ReferenceTape? TryAcquire(ReferenceKey key)
    {
        lock (_order)
        {
            CountLookup(key);
            if (_index.TryGetValue(key, out var node))
            {
                _order.Remove(node);
                _order.AddFirst(node);
                node.Value.Tape.Acquire();
                Interlocked.Increment(ref _hits);
                return node.Value.Tape;
            }
        }
        Interlocked.Increment(ref _misses);
        return null;
    }

    /// <summary>Keeps <paramref name="tape"/> under <paramref name="key"/> if it fits the budget; otherwise marks it to be freed by its last user.</summary>
    internal void Add(ReferenceKey key, ReferenceTape tape)
    {
        lock (_order)
        {
            if (_index.ContainsKey(key) || tape.Bytes > _budget || !Admits(key, tape.Bytes))
            {
                tape.Evict();
                return;
            }
            Trim(tape.Bytes);
            _index[key] = _order.AddFirst((key, tape));
            _bytes += tape.Bytes;
        }
    }

    /// <summary>
    /// Whether a tape of <paramref name="bytes"/> for <paramref name="key"/> may take the room it needs: the least recently
    /// used tapes it would evict have each been asked for less often than it (see the summary).
    /// </summary>
    private bool Admits(ReferenceKey key, long bytes)
    {
        int asked = _asked.GetValueOrDefault(key);
        long freed = 0;
        for (var node = _order.Last; node is not null && _bytes - freed + bytes > _budget; node = node.Previous)
        {
            if (_asked.GetValueOrDefault(node.Value.Key) >= asked) return false;
            freed += node.Value.Tape.Bytes;
        }
        return true;
    }

    private void CountLookup(ReferenceKey key)
    {
        _asked[key] = _asked.GetValueOrDefault(key) + 1;
        if (++_sinceAging < AgingPeriod) return;
        _sinceAging = 0;
        foreach (var k in _asked.Keys.ToList())
        {
            int halved = _asked[k] / 2;
            if (halved == 0) _asked.Remove(k);
            else _asked[k] = halved;
        }
    }

    private void Trim(long room)
    {
        while (_order.Count > 0 && _bytes + room > _budget)
        {
            var last = _order.Last!;
            _order.RemoveLast();
            _index.Remove(last.Value.Key);
            _bytes -= last.Value.Tape.Bytes;
            last.Value.Tape.Evict();
        }
    }
}
