using System.Collections.Concurrent;

namespace AttributionFleet.Engine;

/// <summary>
/// Long-lived threads that make a host's libtorch calls, each running one piece of work at a time from a shared queue.
/// A message consumer runs on whichever thread-pool thread is free, and libtorch's OpenMP keeps a team of worker threads
/// per calling thread, besides the thread-local caches of the allocator. Explaining each batch on whichever pool thread
/// came cost about a quarter of the throughput: <c>fleet bench fleet</c> on bert-base, 2 jobs × 24 texts in batches of
/// 8, the engine alone made 5.7–6.2 texts/s calling from one thread and 4.3–5.0 with each batch on a pool thread, and
/// the fleet (consumers on pool threads) 4.1–4.8. The model loads go through them too: each thread that ever runs a
/// libtorch parallel region keeps an OpenMP team, and once a process has more OpenMP threads than cores, libgomp stops
/// spinning between regions and puts its threads to sleep on futexes (perf: 11.6 % of the worker's samples in the
/// kernel's task switching, against 1.7 % in one process calling from one thread).
/// </summary>
public sealed class EngineThreads : IDisposable
{
    private readonly BlockingCollection<Action> _work = new();
    private readonly Thread[] _threads;

    /// <param name="count">Threads, one per batch explained at once.</param>
    public EngineThreads(int count)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "at least one engine thread");
        _threads = Enumerable.Range(0, count).Select(i => new Thread(Loop)
        {
            IsBackground = true,
            Name = $"fleet-engine-{i}",
        }).ToArray();
        foreach (var t in _threads) t.Start();
    }

    private void Loop()
    {
        foreach (var work in _work.GetConsumingEnumerable()) work();
    }

    /// <summary><paramref name="work"/> on an engine thread; its exception, if any, is the task's.</summary>
    public Task<T> Run<T>(Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _work.Add(() =>
        {
            try { done.SetResult(work()); }
            catch (Exception e) { done.SetException(e); }
        });
        return done.Task;
    }

    /// <summary>
    /// <see cref="Run{T}"/>, waited for: the caller blocks, the work runs on an engine thread, exceptions rethrown as
    /// thrown. Called on an engine thread, the work runs right there (waiting for the queue would wait for itself).
    /// </summary>
    public T Invoke<T>(Func<T> work) => IsEngineThread ? work() : Run(work).GetAwaiter().GetResult();

    /// <summary>Whether the calling thread is one of these engine threads.</summary>
    public bool IsEngineThread => Array.IndexOf(_threads, Thread.CurrentThread) >= 0;

    /// <summary>Takes no more work, lets queued work finish, and waits a little for the threads.</summary>
    public void Dispose()
    {
        _work.CompleteAdding();
        foreach (var t in _threads) t.Join(TimeSpan.FromSeconds(10));
    }
}
