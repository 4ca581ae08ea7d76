using System.Diagnostics;
using System.Text;
using System.Text.Json;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Store;
using RabbitMQ.Client;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Fleet.Tests.RabbitMq;

/// <summary>
/// Jobs that finish without a client (issue #14), on a real RabbitMQ and a real PostgreSQL: worker processes commit batches to
/// the store, the one that commits the last batch completes the job and publishes AttributionJobCompleted once; readers read it
/// afterwards, as often as they like. Faults: a worker SIGKILLed mid-batch (the redelivery is asserted), the database restarted
/// mid-job, messages over the limits, wrong credentials.
/// </summary>
[Collection(RabbitMqCollection.Name)]
public sealed class JobStoreFleetTests(ITestOutputHelper output)
{
    private static SubmitAttributionJob Job(int texts, string prefix, AttributionOptions? options = null) => new()
    {
        JobId = Guid.NewGuid(),
        ModelId = "tiny",
        Texts = TinyModel.Texts(texts, prefix),
        Options = options ?? new AttributionOptions(),
        SubmittedAt = DateTimeOffset.UtcNow,
    };

    private static void SkipUnlessServices(bool postgres = true)
    {
        Skip.If(RabbitMqBroker.SkipReason is not null, RabbitMqBroker.SkipReason);
        if (postgres) Skip.If(PostgresDatabase.SkipReason is not null, PostgresDatabase.SkipReason);
    }

    [SkippableFact]
    public async Task Two_workers_finish_500_texts_with_no_client_and_three_readers_each_read_every_id_once()
    {
        SkipUnlessServices();
        var url = await RabbitMqBroker.Url();
        await using var completions = await FleetEvents.Watch<AttributionJobCompleted>(url);
        await using var cluster = new FleetCluster(url, textsPerBatch: 8, store: PostgresDatabase.ConnectionString);
        await cluster.StartWorkers("w1", "w2");
        var job = Job(500, "five-hundred-");
        var watch = Stopwatch.StartNew();
        await (await cluster.Client()).Submit(job); // and nothing reads or waits while the fleet works

        int published = await completions.CountFor(job.JobId, TimeSpan.FromSeconds(240), TimeSpan.FromSeconds(3), cluster.Logs);
        output.WriteLine($"500 texts completed in {watch.ElapsedMilliseconds} ms (completion seen on the broker)");
        Assert.Equal(1, published);

        var client = await cluster.Client();
        var status = await client.Status(job.JobId);
        Assert.Equal(JobStates.Completed, status!.State);
        Assert.Equal(500, status.TextsDone);
        Assert.Equal(500, status.Completed!.TextCount);
        var reads = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => Task.Run(async () =>
        {
            var ids = new List<string>();
            await foreach (var r in client.Results(job.JobId)) ids.Add(r.Id);
            return ids;
        })));
        foreach (var ids in reads)
        {
            Assert.Equal(500, ids.Count);
            Assert.Equal(job.Texts.Select(t => t.Id).Order(), ids.Order()); // every id once
        }
        var workers = new HashSet<string>();
        await client.Collect(job.JobId, b => { workers.Add(b.Worker); return Task.CompletedTask; });
        Assert.True(workers.SetEquals(new[] { "w1", "w2" }), "both workers should take batches: " + string.Join(", ", workers));
        Assert.False(await completions.QueueExists($"attribution-results-{job.JobId:N}"), "no per-job result queue");
    }

    [SkippableFact]
    public async Task A_worker_killed_mid_batch_and_the_database_restarted_mid_job_give_one_completion_and_every_text_once()
    {
        SkipUnlessServices(postgres: false);
        Skip.If(PrivatePostgres.SkipReason is not null, PrivatePostgres.SkipReason);
        using var pg = new PrivatePostgres();
        pg.Init();
        pg.Start();
        var url = await RabbitMqBroker.Url();
        await using var completions = await FleetEvents.Watch<AttributionJobCompleted>(url);
        await using var cluster = new FleetCluster(url, textsPerBatch: 2, store: pg.ConnectionString);
        await cluster.StartWorkers("w1", "w2");
        // Slow batches (integrated gradients, many steps, float64) so the kill and the restart land mid-batch: about a second a
        // batch here, so the job outlasts the kill and the three-second outage.
        var job = Job(16, "fault-", new AttributionOptions { Method = "integrated-gradients", Steps = 2000, Precision = "float64" });
        var client = await cluster.Client();
        await client.Submit(job);
        // The same job again, as a worker killed mid-split would have it redelivered: its batches are stored once.
        await client.Submit(job);

        // The victim is whichever worker finishes a batch first (which one does is up to the broker and the scheduler: a fixed
        // choice once waited on a worker that found every batch already stored by the other).
        static bool FinishedABatch(WorkerProcess w) => System.Text.RegularExpressions.Regex.IsMatch(w.Output, @"batch \d+/\d+: ");
        var deadline = DateTime.UtcNow.AddSeconds(120);
        WorkerProcess? victim = null;
        while (victim is null && DateTime.UtcNow < deadline)
        {
            victim = cluster.Workers.FirstOrDefault(FinishedABatch);
            if (victim is null) await Task.Delay(20);
        }
        Assert.True(victim is not null, "no worker ever finished a batch\n" + cluster.Logs());
        var survivorProcess = cluster.Workers.Single(w => w != victim);
        victim.Kill(); // SIGKILL while it holds its next batch
        output.WriteLine($"victim {victim.Name} killed");

        pg.Stop(); // the database goes away mid-job ...
        await Task.Delay(3000);
        pg.Start(); // ... and comes back on the same data
        output.WriteLine("database restarted");

        int published = await completions.CountFor(job.JobId, TimeSpan.FromSeconds(240), TimeSpan.FromSeconds(3), cluster.Logs);
        Assert.Equal(1, published);
        var ids = new List<string>();
        await foreach (var r in client.Results(job.JobId)) ids.Add(r.Id);
        Assert.Equal(job.Texts.Select(t => t.Id).Order(), ids.Order());
        var survivor = survivorProcess.Output;
        Assert.Contains("redelivered by the broker", survivor); // the victim's batch really came back
        Assert.Contains("Job store unavailable", cluster.Logs()); // the restart was felt, and waited out
        Assert.False(await completions.QueueExists($"attribution-results-{job.JobId:N}"), "no per-job result queue");
    }

    [SkippableFact]
    public async Task A_worker_killed_mid_split_leaves_a_job_that_another_worker_splits_again_and_completes_once()
    {
        SkipUnlessServices(postgres: false);
        var url = await RabbitMqBroker.Url();
        await using var completions = await FleetEvents.Watch<AttributionJobCompleted>(url);
        // One text per batch: 1,500 batch messages, each publisher-confirmed, so splitting takes long enough to be cut short.
        await using var cluster = new FleetCluster(url, textsPerBatch: 1);
        await cluster.StartWorkers("victim");
        var job = Job(1500, "split-");
        var client = await cluster.Client();
        await client.Submit(job);
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (await client.Status(job.JobId) is null && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.True(DateTime.UtcNow < deadline, "the job was never admitted\n" + cluster.Logs());
        await using (var connection = await new ConnectionFactory { Uri = new Uri(url) }.CreateConnectionAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            // Admitted and part of its batches sent: SIGKILL mid-split.
            while (await channel.MessageCountAsync(cluster.BatchQueue) < 20 && DateTime.UtcNow < deadline) await Task.Delay(5);
            cluster.Workers[0].Kill();
            uint queued = await channel.MessageCountAsync(cluster.BatchQueue);
            output.WriteLine($"victim killed with {queued} of {job.Texts.Count} batch messages queued");
            Assert.InRange(queued, 1u, (uint)job.Texts.Count - 1); // the split had begun and not finished
        }
        await cluster.StartWorkers("survivor");

        int published = await completions.CountFor(job.JobId, TimeSpan.FromSeconds(300), TimeSpan.FromSeconds(3), cluster.Logs);
        Assert.Equal(1, published);
        Assert.Contains("already admitted", cluster.Workers[1].Output); // the job message really came back and was split again
        var ids = new List<string>();
        await foreach (var r in client.Results(job.JobId)) ids.Add(r.Id);
        Assert.Equal(job.Texts.Select(t => t.Id).Order(), ids.Order()); // every text once
    }

    [SkippableFact]
    public async Task A_job_message_over_the_limit_fails_naming_it_and_the_next_job_completes()
    {
        SkipUnlessServices(postgres: false);
        var url = await RabbitMqBroker.Url();
        await using var cluster = new FleetCluster(url, textsPerBatch: 4);
        cluster.WorkerSettings["Limits__MaxMessageBytes"] = "20000";
        await cluster.StartWorkers("w1");
        // Sent by hand around the client's own check (which refuses it before sending, below).
        var big = Job(3, "big-") with { Texts = Enumerable.Range(0, 3).Select(i => new JobText { Id = $"big{i}", Text = string.Join(' ', Enumerable.Repeat("word", 2000)) }).ToList() };
        var factory = new ConnectionFactory { Uri = new Uri(url) };
        await using (var connection = await factory.CreateConnectionAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            var envelope = JsonSerializer.Serialize(new
            {
                messageId = Guid.NewGuid(),
                messageType = new[] { "urn:message:AttributionFleet.Contracts.V1:SubmitAttributionJob" },
                message = big,
                sentTime = DateTime.UtcNow,
            }, new JsonSerializerOptions(JsonSerializerDefaults.Web));
            var props = new BasicProperties { ContentType = "application/vnd.masstransit+json", Persistent = true, MessageId = Guid.NewGuid().ToString() };
            await channel.BasicPublishAsync("", cluster.JobQueue, false, props, Encoding.UTF8.GetBytes(envelope));
        }
        var client = await cluster.Client();
        var outcome = await client.Collect(big.JobId, _ => Task.CompletedTask, null, new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        Assert.False(outcome.Succeeded);
        Assert.Equal(FailureReasons.LimitExceeded, outcome.Failed!.ReasonCode);
        Assert.Equal("Limits:MaxMessageBytes", outcome.Failed.Field);
        Assert.Contains("Limits:MaxMessageBytes", outcome.Failed.Message);

        var (next, batches) = await cluster.Run(Job(5, "after-big-"), TimeSpan.FromSeconds(60));
        Assert.True(next.Succeeded, next.Failed?.Message + cluster.Logs());
        Assert.Equal(5, batches.Sum(b => b.Results.Count));
    }

    [SkippableFact]
    public async Task A_job_far_over_the_receive_limit_is_refused_by_the_broker_and_the_fleet_keeps_going()
    {
        Skip.If(PrivateRabbitMqNode.SkipReason is not null, PrivateRabbitMqNode.SkipReason);
        const int receiveLimit = 1024 * 1024;
        // The broker's max_message_size and the workers' receive limit are the same number, as in deploy/rabbitmq/rabbitmq.conf.
        using var node = new PrivateRabbitMqNode($"max_message_size = {receiveLimit}\n");
        await node.Start(TimeSpan.FromSeconds(60));
        await using var cluster = new FleetCluster(node.Url, textsPerBatch: 4);
        cluster.WorkerSettings["RabbitMq__MaxMessageBytes"] = receiveLimit.ToString();
        await cluster.StartWorkers("w1");

        // 2 MiB, twice the limit, published around the client's own check: the broker refuses it, it never reaches a queue.
        var huge = Job(4, "huge-") with { Texts = Enumerable.Range(0, 4).Select(i => new JobText { Id = $"h{i}", Text = new string('w', 512 * 1024) }).ToList() };
        var factory = new ConnectionFactory { Uri = new Uri(node.Url) };
        await using (var connection = await factory.CreateConnectionAsync())
        {
            await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
            var body = JsonSerializer.SerializeToUtf8Bytes(new { messageType = new[] { "urn:message:AttributionFleet.Contracts.V1:SubmitAttributionJob" }, message = huge },
                new JsonSerializerOptions(JsonSerializerDefaults.Web));
            Assert.True(body.Length > receiveLimit);
            var refused = await Record.ExceptionAsync(async () =>
                await channel.BasicPublishAsync("", cluster.JobQueue, true, new BasicProperties { ContentType = "application/vnd.masstransit+json" }, body));
            output.WriteLine($"broker's answer to {body.Length} bytes: {refused?.GetType().Name}: {refused?.Message}");
            Assert.NotNull(refused);
            Assert.Contains("max size", refused!.Message + refused.InnerException?.Message, StringComparison.OrdinalIgnoreCase);
        }
        // The client refuses it itself, naming the limit (Limits:MaxMessageBytes, 16 MiB, is above it only with a larger job).
        var client = await cluster.Client();
        var tooLarge = Job(1, "x") with { Texts = new[] { new JobText { Id = "x", Text = new string('w', 18_000) } } };
        var clientLimits = Enumerable.Range(0, 1000).Select(i => new JobText { Id = $"m{i}", Text = new string('w', 18_000) }).ToList();
        var e = await Assert.ThrowsAsync<JobTooLargeException>(() => client.Submit(tooLarge with { Texts = clientLimits }));
        Assert.Contains("Limits:MaxMessageBytes", e.Message);

        var (next, batches) = await cluster.Run(Job(5, "after-huge-"), TimeSpan.FromSeconds(60));
        Assert.True(next.Succeeded, next.Failed?.Message + cluster.Logs());
        Assert.Equal(5, batches.Sum(b => b.Results.Count));
        Assert.False(cluster.Workers[0].HasExited);
    }

    [SkippableFact]
    public async Task A_worker_whose_broker_login_is_refused_becomes_ready_once_the_credentials_work()
    {
        SkipUnlessServices(postgres: false);
        Skip.If(Environment.UserName != "root" || !File.Exists("/usr/sbin/rabbitmqctl"), "needs root and rabbitmqctl to add a broker user");
        var url = new Uri(await RabbitMqBroker.Url());
        Skip.If(url.Host is not ("localhost" or "127.0.0.1"), "the broker must be local to add a user");
        var user = $"fleet-test-{Guid.NewGuid():N}"[..24];
        const string password = "fixed-later";
        await using var cluster = new FleetCluster($"amqp://{user}:{password}@{url.Host}:{url.Port}/");
        var worker = cluster.StartWorker("late-login"); // the user does not exist yet: the login is refused
        try
        {
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (!worker.Output.Contains("ACCESS_REFUSED") && DateTime.UtcNow < deadline) await Task.Delay(200);
            Assert.Contains("ACCESS_REFUSED", worker.Output);
            using (var http = new HttpClient())
                Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, (await http.GetAsync($"http://localhost:{worker.HealthPort}/health/ready")).StatusCode);

            Rabbitmqctl("add_user", user, password);
            Rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*");
            await worker.WaitReady(TimeSpan.FromSeconds(90));
            var (outcome, batches) = await cluster.Run(Job(3, "late-"), TimeSpan.FromSeconds(60));
            Assert.True(outcome.Succeeded, outcome.Failed?.Message + cluster.Logs());
        }
        finally
        {
            try { Rabbitmqctl("delete_user", user); } catch (InvalidOperationException) { }
        }
    }

    private static void Rabbitmqctl(params string[] args)
    {
        var info = new ProcessStartInfo("rabbitmqctl") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit(60_000);
        if (p.ExitCode != 0) throw new InvalidOperationException($"rabbitmqctl {string.Join(' ', args)}: {err.Result}");
    }
}
