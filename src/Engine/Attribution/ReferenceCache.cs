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
/// Reference tapes kept across batches and jobs in a least-recently-used list under a memory budget. A tape is exact to
/// reuse (the reference half has no gradient and depends only on its key). One tape of a bert-base-sized model at 128
/// tokens holds ~61 MB in float32 (per layer 9·L·H for Q, Kᵀ, V, the two LayerNorm inputs and the GELU input, and 2·heads·L²
/// for the scores and the softmax), so the default budget (1 GiB) keeps about sixteen lengths of such a model at 128
/// tokens (more of shorter ones). A job whose lengths outnumber what fits gets fewer hits from the next job (least
/// recently used goes first).
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

    private readonly LinkedList<(ReferenceKey Key, ReferenceTape Tape)> _order = new();
    private readonly Dictionary<ReferenceKey, LinkedListNode<(ReferenceKey Key, ReferenceTape Tape)>> _index = new();
    private long _budget, _bytes, _hits, _misses;

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
            if (_index.ContainsKey(key) || tape.Bytes > _budget)
            {
                tape.Evict();
                return;
            }
            Trim(tape.Bytes);
            _index[key] = _order.AddFirst((key, tape));
            _bytes += tape.Bytes;
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
