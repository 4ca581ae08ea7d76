using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Rules;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Batching;

/// <summary>
/// The tape cache: a new tape takes room only from tapes asked for less often than it, least recently used first; a job
/// of more lengths than fit keeps what it has instead of cycling it out; counts age; the budget holds; a tape in use
/// outlives its eviction.
/// </summary>
public class ReferenceCacheTests
{
    private static ReferenceTape Tape(long floats) =>
        new(new List<Tensor[]> { new[] { ReferenceTape.Keep(zeros(1, floats)) } }, ReferenceTape.Keep(zeros(1, 2)));

    private static ReferenceKey Key(int length) => new(1, "pad", length, SoftmaxRuleKind.Exact, true);

    [Fact]
    public void ANewTapeTakesRoomOnlyFromTapesAskedForLessOftenLeastRecentlyUsedFirst()
    {
        long bytes = Tape(1000).Bytes;
        var cache = new ReferenceCache(bytes * 2);
        foreach (int l in new[] { 10, 11 }) cache.Acquire(Key(l), () => Tape(1000)).Release();
        cache.Acquire(Key(10), () => throw new InvalidOperationException("a hit records nothing")).Release(); // 10: asked twice, most recent
        cache.Acquire(Key(12), () => Tape(1000)).Release(); // asked once, as often as 11: not kept
        Assert.Equal(new[] { 2, 1, 1 }, new[] { 10, 11, 12 }.Select(l => cache.Asked(Key(l))));
        Assert.Equal(2, cache.Count);
        int recorded = 0;
        cache.Acquire(Key(12), () => { recorded++; return Tape(1000); }).Release(); // asked twice now, 11 once: 11 goes
        Assert.Equal(1, recorded);
        Assert.Equal(new[] { Key(12), Key(10) }, cache.Keys);
        Assert.True(cache.Bytes <= cache.BudgetBytes);
        cache.Acquire(Key(12), () => throw new InvalidOperationException("12 is held now")).Release();
        cache.Acquire(Key(10), () => throw new InvalidOperationException("10 is still held")).Release();
        cache.Acquire(Key(11), () => { recorded++; return Tape(1000); }).Release(); // asked twice, the least recent (12) three times
        Assert.Equal(2, recorded);
        Assert.Equal(new[] { Key(10), Key(12) }, cache.Keys);
        Assert.Equal(3, cache.Hits);
        Assert.Equal(5, cache.Misses);
        Assert.Equal(0.375, cache.HitRate, 12);
    }

    /// <summary>
    /// A job visits its lengths in the same order every time. With room for three of five lengths, least-recently-used
    /// alone would evict each tape just before the job needs it again, and the job run again would find none; here it
    /// finds the three it kept.
    /// </summary>
    [Fact]
    public void AJobOfMoreLengthsThanFitKeepsWhatItHasInsteadOfCyclingItOut()
    {
        var cache = new ReferenceCache(Tape(1000).Bytes * 3);
        var lengths = new[] { 50, 40, 30, 20, 10 };
        foreach (int l in lengths) cache.Acquire(Key(l), () => Tape(1000)).Release();
        cache.ResetCounters();
        foreach (int l in lengths) cache.Acquire(Key(l), () => Tape(1000)).Release();
        Assert.Equal(3, cache.Hits);
        Assert.Equal(0.6, cache.HitRate, 12);
    }

    [Fact]
    public void CountsHalveEveryAgingPeriodSoWhatStoppedBeingAskedForFades()
    {
        var cache = new ReferenceCache(Tape(1000).Bytes);
        for (int i = 0; i < 10; i++) cache.Acquire(Key(10), () => Tape(1000)).Release();
        Assert.Equal(10, cache.Asked(Key(10)));
        for (int i = 10; i < ReferenceCache.AgingPeriod; i++) cache.TryAcquire(Key(1000 + i % 7))?.Release();
        Assert.Equal(5, cache.Asked(Key(10)));
        // Another model's tape, asked for more often than the halved count, takes the room.
        for (int i = 0; i < 6; i++) cache.Acquire(Key(20), () => Tape(1000)).Release();
        Assert.Equal(Key(20), cache.Keys.Single());
    }

    [Fact]
    public void ATapeInUseIsFreedOnlyWhenReleased()
    {
        var cache = new ReferenceCache(Tape(1000).Bytes);
        var held = cache.Acquire(Key(10), () => Tape(1000));
        cache.TryAcquire(Key(11)); // a miss: 11 asked for once, as often as 10
        cache.Acquire(Key(11), () => Tape(1000)).Release(); // twice now: evicts 10 while it is held
        Assert.Equal(1, cache.Count);
        Assert.Equal(0.0, held.Input(0, 0).sum().item<float>()); // still readable
        var tensor = held.Input(0, 0);
        held.Release();
        Assert.Throws<InvalidOperationException>(() => tensor.sum());
    }

    [Fact]
    public void ATapeLargerThanTheBudgetIsUsedOnceAndNotKept()
    {
        var cache = new ReferenceCache(100);
        var tape = cache.Acquire(Key(10), () => Tape(1000));
        Assert.Equal(0, cache.Count);
        Assert.Equal(0.0, tape.Input(0, 0).sum().item<float>());
        tape.Release();
        Assert.Equal(0, cache.Bytes);
    }
}
