using AttributionFleet.Engine.Attribution;
using AttributionFleet.Engine.Rules;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Batching;

/// <summary>The tape cache: least recently used goes first, the budget holds, a tape in use outlives its eviction.</summary>
public class ReferenceCacheTests
{
    private static ReferenceTape Tape(long floats) =>
        new(new List<Tensor[]> { new[] { ReferenceTape.Keep(zeros(1, floats)) } }, ReferenceTape.Keep(zeros(1, 2)));

    private static ReferenceKey Key(int length) => new(1, "pad", length, SoftmaxRuleKind.Exact, true);

    [Fact]
    public void LeastRecentlyUsedIsEvictedFirstAndTheBudgetHolds()
    {
        long bytes = Tape(1000).Bytes;
        var cache = new ReferenceCache(bytes * 2);
        foreach (int l in new[] { 10, 11 }) cache.Acquire(Key(l), () => Tape(1000)).Release();
        cache.Acquire(Key(10), () => throw new InvalidOperationException("a hit records nothing")).Release(); // 10 is now the most recent
        cache.Acquire(Key(12), () => Tape(1000)).Release();
        Assert.Equal(2, cache.Count);
        Assert.True(cache.Bytes <= cache.BudgetBytes);
        int recorded = 0;
        cache.Acquire(Key(11), () => { recorded++; return Tape(1000); }).Release();
        Assert.Equal(1, recorded); // 11 was evicted
        Assert.Equal(1, cache.Hits);
        Assert.Equal(4, cache.Misses);
        Assert.Equal(0.2, cache.HitRate, 12);
    }

    [Fact]
    public void ATapeInUseIsFreedOnlyWhenReleased()
    {
        var cache = new ReferenceCache(Tape(1000).Bytes);
        var held = cache.Acquire(Key(10), () => Tape(1000));
        cache.Acquire(Key(11), () => Tape(1000)).Release(); // evicts 10 while it is held
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
