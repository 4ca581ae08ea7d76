using System.Diagnostics;
using System.Text;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using RabbitMQ.Client;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Fleet.Tests;

/// <summary>RabbitMQ tests share one broker: run one at a time (the machine has 2 cores).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class RabbitMqCollection
{
    public const string Name = "RabbitMQ";
}

/// <summary>Worker processes on a real RabbitMQ: sharing, a killed worker, poison messages.</summary>
[Collection(RabbitMqCollection.Name)]
public sealed class RabbitMqFleetTests(ITestOutputHelper output)
{
    private static SubmitAttributionJob Job(int texts, string prefix, AttributionOptions? options = null) => new()
    {
        JobId = Guid.NewGuid(),
        ModelId = "tiny",
        Texts = TinyModel.Texts(texts, prefix),
        Options = options ?? new AttributionOptions(),
        SubmittedAt = DateTimeOffset.UtcNow,
    };

    [RabbitMqFact]
    public async Task Ten_jobs_on_two_workers_give_every_text_exactly_once_and_both_workers_take_batches()
    {
        await using var cluster = new FleetCluster(await RabbitMqBroker.Url(), textsPerBatch: 4);
        await cluster.StartWorkers("w1", "w2");
        var jobs = Enumerable.Range(0, 10).Select(j => Job(20, $"j{j}-")).ToList();
        var watch = Stopwatch.StartNew();
        var runs = await Task.WhenAll(jobs.Select(j => cluster.Run(j, TimeSpan.FromSeconds(120))));
        output.WriteLine($"10 jobs x 20 texts in {watch.ElapsedMilliseconds} ms");

        for (int j = 0; j < jobs.Count; j++)
        {
            var (outcome, batches) = runs[j];
            Assert.True(outcome.Succeeded, outcome.Failed?.Message + cluster.Logs());
            Assert.Equal(5, outcome.Completed!.BatchCount);
            var ids = batches.SelectMany(b => b.Results).Select(r => r.Id).ToList();
            Assert.Equal(jobs[j].Texts.Select(t => t.Id).Order(), ids.Order()); // each exactly once
            Assert.All(batches, b => Assert.Equal(jobs[j].JobId, b.JobId));
        }
        var byWorker = runs.SelectMany(r => r.Batches).GroupBy(b => b.Worker).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine(string.Join(", ", byWorker.Select(p => $"{p.Key}: {p.Value} batches")));
        Assert.True(byWorker.ContainsKey("w1") && byWorker.ContainsKey("w2"), "both workers should take batches: " + string.Join(", ", byWorker.Keys));
    }

    [RabbitMqFact]
    public async Task A_worker_killed_mid_job_loses_nothing()
    {
        await using var cluster = new FleetCluster(await RabbitMqBroker.Url(), textsPerBatch: 2);
        await cluster.StartWorkers("victim", "survivor");
        // Slow batches (integrated gradients, many steps, float64) so the kill lands in the middle of one.
        var job = Job(10, "k", new AttributionOptions { Method = "integrated-gradients", Steps = 600, Precision = "float64" });
        var victim = cluster.Workers[0];
        bool killed = false;
        int batchesBeforeKill = 0;
        var (outcome, batches) = await cluster.Run(job, TimeSpan.FromSeconds(150), b =>
        {
            if (killed || b.Worker != "victim") return;
            batchesBeforeKill = b.BatchIndex;
            victim.Kill(); // SIGKILL while it holds its next batch
            killed = true;
        });

        Assert.True(killed, "the victim never completed a batch");
        Assert.True(outcome.Succeeded, outcome.Failed?.Message + cluster.Logs());
        var ids = batches.SelectMany(b => b.Results).Select(r => r.Id).ToList();
        Assert.Equal(job.Texts.Select(t => t.Id).Order(), ids.Order());
        Assert.Contains(batches, b => b.Worker == "survivor");
        output.WriteLine($"batches: {string.Join(" ", batches.Select(b => $"{b.BatchIndex}@{b.Worker}"))}; duplicates dropped: {outcome.Completed!.DuplicateBatches}");
    }

    [RabbitMqFact]
    public async Task A_malformed_body_and_an_unknown_message_type_go_to_the_error_queue_and_the_worker_keeps_running()
    {
        await using var cluster = new FleetCluster(await RabbitMqBroker.Url());
        await cluster.StartWorkers("w1");
        var factory = new ConnectionFactory { Uri = new Uri(cluster.Url) };
        await using var connection = await factory.CreateConnectionAsync();
        await using (var channel = await connection.CreateChannelAsync())
        {
            var props = new BasicProperties { ContentType = "application/vnd.masstransit+json", Persistent = true, MessageId = Guid.NewGuid().ToString() };
            await channel.BasicPublishAsync("", cluster.JobQueue, false, props, Encoding.UTF8.GetBytes("{ this is not json"));
            var unknown = $$"""
                {"messageId":"{{Guid.NewGuid()}}","messageType":["urn:message:Somebody.Else:NotAFleetMessage"],"message":{"x":1},"sentTime":"{{DateTime.UtcNow:O}}"}
                """;
            var props2 = new BasicProperties { ContentType = "application/vnd.masstransit+json", Persistent = true, MessageId = Guid.NewGuid().ToString() };
            await channel.BasicPublishAsync("", cluster.JobQueue, false, props2, Encoding.UTF8.GetBytes(unknown));
        }

        uint inError = 0;
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline && inError < 2)
        {
            await Task.Delay(200);
            try
            {
                await using var channel = await connection.CreateChannelAsync();
                inError = await channel.MessageCountAsync(cluster.JobQueue + "_error");
            }
            catch (RabbitMQ.Client.Exceptions.OperationInterruptedException) { } // not declared yet
        }
        Assert.True(inError == 2, $"{inError} messages in {cluster.JobQueue}_error\n{cluster.Logs()}");
        Assert.False(cluster.Workers[0].HasExited);

        var job = Job(3, "after-poison-");
        var (outcome, batches) = await cluster.Run(job, TimeSpan.FromSeconds(60));
        Assert.True(outcome.Succeeded, outcome.Failed?.Message + cluster.Logs());
        Assert.Equal(3, batches.SelectMany(b => b.Results).Count());
    }

    [RabbitMqFact]
    public async Task A_bad_job_over_rabbitmq_fails_with_its_reason()
    {
        await using var cluster = new FleetCluster(await RabbitMqBroker.Url());
        await cluster.StartWorkers("w1");
        var job = Job(2, "bad-") with { ModelId = "not-configured" };
        var (outcome, _) = await cluster.Run(job, TimeSpan.FromSeconds(60));
        Assert.False(outcome.Succeeded);
        Assert.Equal(FailureReasons.UnknownModel, outcome.Failed!.ReasonCode);
    }
}
