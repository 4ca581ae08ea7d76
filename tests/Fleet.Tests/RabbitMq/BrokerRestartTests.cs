using System.Diagnostics;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Fleet.Tests.RabbitMq;

/// <summary>
/// The broker itself restarts mid-job (issue #4): a private RabbitMQ node, two worker processes and the in-process
/// client on it; the node is stopped (SIGTERM) once the first batch result is in and started again on the same port
/// and data. The workers and the collector reconnect, and the job completes with every text exactly once.
/// No fleet code is specific to this: MassTransit reconnects by itself, but on its own schedule (its RabbitMQ receive
/// transport retries at about 3, 9 and 21 s after the connection drops, not configurable), so with a node that takes
/// ~8 s to boot the first result after the restart comes ~7 s after the node is back.
/// </summary>
[Collection(RabbitMqCollection.Name)]
public sealed class BrokerRestartTests(ITestOutputHelper output)
{
    [PrivateRabbitMqFact]
    public async Task Restarting_the_broker_mid_job_loses_nothing_and_the_job_completes()
    {
        var total = Stopwatch.StartNew();
        using var node = new PrivateRabbitMqNode();
        var model = Task.Run(() => TinyModel.Path); // saved while the node boots
        await node.Start(TimeSpan.FromSeconds(60));
        await model;
        output.WriteLine($"node up on port {node.Port} after {total.ElapsedMilliseconds} ms");

        await using var cluster = new FleetCluster(node.Url, textsPerBatch: 2);
        await cluster.StartWorkers("w1", "w2");
        output.WriteLine($"workers ready after {total.ElapsedMilliseconds} ms");

        // 24 batches of 2 texts, slow enough (integrated gradients) that most are still to do when the broker stops.
        var job = new SubmitAttributionJob
        {
            JobId = Guid.NewGuid(),
            ModelId = "tiny",
            Texts = TinyModel.Texts(48, "r"),
            Options = new AttributionOptions { Method = "integrated-gradients", Steps = 300 },
            SubmittedAt = DateTimeOffset.UtcNow,
        };
        int phase = 0; // 0: broker up, 1: broker stopped or starting, 2: broker restarted
        var batches = new List<(AttributionBatchCompleted Batch, int Phase)>();
        var restarted = new Stopwatch();
        long firstAfterRestartMs = -1;
        var firstBatch = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = await cluster.Client();
        var collect = client.Collect(job.JobId, b =>
        {
            int now = Volatile.Read(ref phase);
            lock (batches) batches.Add((b, now));
            if (now == 2) Interlocked.CompareExchange(ref firstAfterRestartMs, restarted.ElapsedMilliseconds, -1);
            firstBatch.TrySetResult();
            return Task.CompletedTask;
        }, null, new CancellationTokenSource(TimeSpan.FromSeconds(150)).Token); // a worker may reconnect late (MassTransit's schedule)
        var submitted = Stopwatch.StartNew();
        await client.Submit(job);

        await firstBatch.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Volatile.Write(ref phase, 1);
        long firstMs = submitted.ElapsedMilliseconds;
        var down = Stopwatch.StartNew();
        await node.Stop(TimeSpan.FromSeconds(20));
        long stopMs = down.ElapsedMilliseconds;
        await Task.Delay(TimeSpan.FromSeconds(2.5));
        var up = Stopwatch.StartNew();
        await node.Start(TimeSpan.FromSeconds(60));
        restarted.Start();
        Volatile.Write(ref phase, 2);
        output.WriteLine($"first batch after {firstMs} ms; broker stopped in {stopMs} ms, down {down.ElapsedMilliseconds} ms (start {up.ElapsedMilliseconds} ms)");

        JobOutcome outcome;
        try
        {
            outcome = await collect;
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the job did not complete after the restart\n{Batches()}\n{cluster.Logs()}\n--- node ---\n{node.Output}");
        }
        output.WriteLine($"job done {submitted.ElapsedMilliseconds} ms after submit; {Batches()}; duplicates dropped: {outcome.Completed?.DuplicateBatches}; first result {firstAfterRestartMs} ms and job done {restarted.ElapsedMilliseconds} ms after the restart");

        Assert.True(outcome.Succeeded, outcome.Failed?.Message + cluster.Logs());
        Assert.Equal(24, outcome.Completed!.BatchCount);
        var ids = batches.SelectMany(b => b.Batch.Results).Select(r => r.Id).ToList();
        Assert.Equal(job.Texts.Select(t => t.Id).Order(), ids.Order()); // every text exactly once
        // The job was still going when the broker stopped (else the batches are too fast for this machine: more Steps).
        Assert.Contains(batches, b => b.Phase == 2);
        // The workers came through the restart: still running, bus connected again (/health/ready).
        foreach (var w in cluster.Workers)
        {
            Assert.False(w.HasExited, $"worker {w.Name} exited\n{cluster.Logs()}");
            await w.WaitReady(TimeSpan.FromSeconds(30));
        }
        output.WriteLine($"total {total.ElapsedMilliseconds} ms");

        string Batches()
        {
            lock (batches) return "batches (index@worker/phase): " + string.Join(" ", batches.Select(b => $"{b.Batch.BatchIndex}@{b.Batch.Worker}/{b.Phase}"));
        }
    }
}
