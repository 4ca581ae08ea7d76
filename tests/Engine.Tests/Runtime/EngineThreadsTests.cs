using AttributionFleet.Engine.Attribution;
using Xunit;

namespace AttributionFleet.Engine.Tests.Runtime;

/// <summary>The worker's libtorch calls run on long-lived engine threads.</summary>
public class EngineThreadsTests
{
    [Fact]
    public void WorkRunsOnOneLongLivedThread()
    {
        using var engine = new EngineThreads(1);
        var ids = Enumerable.Range(0, 20).Select(_ => engine.Invoke(() => Environment.CurrentManagedThreadId)).Distinct().ToList();
        Assert.Single(ids);
        Assert.NotEqual(Environment.CurrentManagedThreadId, ids[0]);
    }

    [Fact]
    public async Task SeveralThreadsTakeWorkFromOneQueue()
    {
        using var engine = new EngineThreads(2);
        using var bothBusy = new Barrier(2);
        // Two pieces of work that can only finish together: they must run on two engine threads at once.
        var ids = await Task.WhenAll(Enumerable.Range(0, 2).Select(_ => engine.Run(() =>
        {
            Assert.True(bothBusy.SignalAndWait(TimeSpan.FromSeconds(10)), "the second engine thread never took work");
            return Environment.CurrentManagedThreadId;
        })));
        Assert.Equal(2, ids.Distinct().Count());
    }

    [Fact]
    public async Task WorkThatInvokesTheEngineFromAnEngineThreadRunsInPlace()
    {
        // The registry loads a model through the engine threads; a load asked for on an engine thread must not wait for itself.
        using var engine = new EngineThreads(1);
        var nested = engine.Run(() => (Outer: Environment.CurrentManagedThreadId, Inner: engine.Invoke(() => Environment.CurrentManagedThreadId)));
        var (outer, inner) = await nested.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(outer, inner);
        Assert.False(engine.IsEngineThread);
    }

    [Fact]
    public void AnExceptionReachesTheCallerAsThrown()
    {
        using var engine = new EngineThreads(1);
        var e = Assert.Throws<AttributionRequestException>(() => engine.Invoke<int>(() => throw new AttributionRequestException("target", "no such target")));
        Assert.Equal("target", e.Field);
        Assert.Equal(3, engine.Invoke(() => 3)); // the thread survives it
    }
}
