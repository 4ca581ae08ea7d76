using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Text;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using MassTransit;
using MassTransit.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace AttributionFleet.Fleet.Tests;

/// <summary>The worker on MassTransit's in-memory test harness: each failure becomes the right message and the worker keeps consuming.</summary>
public sealed class HarnessTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private sealed class Fleet : IAsyncDisposable
    {
        public required ServiceProvider Provider { get; init; }
        public ITestHarness Harness => Provider.GetRequiredService<ITestHarness>();
        public FleetClient Client => Provider.GetRequiredService<FleetClient>();

        public async Task<(JobOutcome Outcome, List<AttributionBatchCompleted> Batches)> Run(SubmitAttributionJob job)
        {
            var batches = new List<AttributionBatchCompleted>();
            var collect = Client.Collect(job.JobId, b => { batches.Add(b); return Task.CompletedTask; }, null, new CancellationTokenSource(Timeout).Token);
            await Client.Submit(job);
            return (await collect, batches);
        }

        public async ValueTask DisposeAsync()
        {
            await Harness.Stop();
            await Provider.DisposeAsync();
        }
    }

    private static async Task<Fleet> Start(Func<IServiceProvider, IAttributionEngine>? engine = null, Dictionary<string, string?>? settings = null)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>(settings ?? new())
        {
            ["Models:tiny:Path"] = TinyModel.Path,
            ["Models:tiny:DeltaThreshold"] = "1e-3",
            ["Models:missing:Path"] = "/nonexistent/model",
            ["Worker:RetryLimit"] = "2",
            ["Worker:RetryMinIntervalMs"] = "10",
            ["Worker:RetryMaxIntervalMs"] = "50",
            ["Worker:TextsPerBatch"] = "2",
            ["Worker:PreloadModels"] = "false",
            ["Limits:MaxTextsPerJob"] = "6",
            ["Limits:MaxCharactersPerText"] = "200",
        }).Build();
        var services = new ServiceCollection();
        services.AddLogging();
        if (engine is not null) services.AddSingleton(engine);
        services.AddFleetServices(configuration);
        var worker = configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>()!;
        services.AddMassTransitTestHarness(x => x.AddFleetBus(worker, new RabbitMqOptions()));
        var fleet = new Fleet { Provider = services.BuildServiceProvider(true) };
        await fleet.Harness.Start();
        return fleet;
    }

    private static SubmitAttributionJob Job(int texts = 3, string model = "tiny", AttributionOptions? options = null) => new()
    {
        JobId = Guid.NewGuid(),
        ModelId = model,
        Texts = TinyModel.Texts(texts),
        Options = options ?? new AttributionOptions(),
        SubmittedAt = DateTimeOffset.UtcNow,
    };

    private static async Task AssertStillConsumes(Fleet fleet)
    {
        var (outcome, batches) = await fleet.Run(Job(3));
        Assert.True(outcome.Succeeded, outcome.Failed?.Message);
        Assert.Equal(3, batches.Sum(b => b.Results.Count));
    }

    [Fact]
    public async Task AWaitingReaderLearnsOfTheEndFromTheEventNotItsNextPoll()
    {
        // Polls a minute apart: the first read (before the job reaches the store) finds nothing, and only the job's end
        // event can make the reader look again within the test's 20 seconds.
        await using var fleet = await Start(settings: new() { ["Store:PollIntervalMs"] = "60000" });
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var (outcome, batches) = await fleet.Run(Job(3));
        Assert.True(outcome.Succeeded, outcome.Failed?.Message);
        Assert.Equal(3, batches.Sum(b => b.Results.Count));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"the reader took {watch.Elapsed.TotalSeconds:F1} s: it waited for its poll");
        Assert.True(await fleet.Harness.Published.Any<AttributionJobCompleted>(m => m.Context.Message.JobId != Guid.Empty));
    }

    [Fact]
    public async Task A_job_is_split_into_batches_and_every_text_comes_back_once()
    {
        await using var fleet = await Start();
        var job = Job(5);
        var (outcome, batches) = await fleet.Run(job);

        Assert.True(outcome.Succeeded, outcome.Failed?.Message);
        Assert.Equal(3, outcome.Completed!.BatchCount); // 5 texts, 2 per batch
        Assert.Equal(5, outcome.Completed.TextCount);
        Assert.Equal(job.Texts.Select(t => t.Id).Order(), batches.SelectMany(b => b.Results).Select(r => r.Id).Order());
        Assert.All(batches.SelectMany(b => b.Results), r =>
        {
            Assert.Equal(r.Tokens.Count, r.Scores.Count);
            Assert.Equal("deeplift", r.Method);
            Assert.True(Math.Abs(r.Delta) < 1e-3, $"delta {r.Delta}");
            Assert.Equal(Math.Abs(r.Delta) > 1e-3, r.OverThreshold);
        });
        Assert.Equal(1e-3, outcome.Completed.Delta.Threshold);
        Assert.True(outcome.Completed.Delta.Max < 1e-3);
        Assert.True(await fleet.Harness.Consumed.Any<SubmitAttributionJob>(x => x.Context.Message.JobId == job.JobId));
        Assert.True(await fleet.Harness.Published.Any<AttributionJobAccepted>(x => x.Context.Message.JobId == job.JobId));
        Assert.True(await fleet.Harness.Published.Any<AttributionJobCompleted>(x => x.Context.Message.JobId == job.JobId));
    }

    [Fact]
    public async Task The_results_match_the_engine_in_one_process()
    {
        await using var fleet = await Start();
        var job = Job(4, options: new AttributionOptions { Method = "integrated-gradients", Steps = 16, Output = "logit", Target = "1" });
        var (outcome, batches) = await fleet.Run(job);
        Assert.True(outcome.Succeeded, outcome.Failed?.Message);

        using var model = LoadedModel.Load(TinyModel.Path);
        var direct = new TextExplainer(model).Explain(job.Texts.Select(t => t.Text).ToList(),
            new ExplainRequest { Method = "integrated-gradients", Steps = 16, Output = "logit", Target = "1" });
        var byId = batches.SelectMany(b => b.Results).ToDictionary(r => r.Id);
        for (int i = 0; i < job.Texts.Count; i++)
        {
            var r = byId[job.Texts[i].Id];
            Assert.Equal(direct[i].Tokens, r.Tokens);
            Assert.Equal(1, r.TargetIndex);
            for (int k = 0; k < r.Scores.Count; k++) Assert.Equal(direct[i].Scores[k], r.Scores[k], 1e-6);
        }
    }

    [Theory]
    [InlineData("unknown-model", "unknown-model", "model_id")]
    [InlineData("unknown-method", "invalid-request", "method")]
    [InlineData("no-texts", "invalid-request", "texts")]
    [InlineData("empty-text", "invalid-request", "texts[1]")]
    [InlineData("too-many-texts", "limit-exceeded", "Limits:MaxTextsPerJob")]
    [InlineData("text-too-long", "limit-exceeded", "Limits:MaxCharactersPerText")]
    [InlineData("bad-target", "invalid-request", "target")]
    [InlineData("model-folder-missing", "model-load-failed", null)]
    public async Task A_bad_job_fails_with_the_reason_and_the_worker_keeps_consuming(string @case, string reason, string? field)
    {
        await using var fleet = await Start();
        var job = @case switch
        {
            "unknown-model" => Job(model: "no-such-model"),
            "unknown-method" => Job(options: new AttributionOptions { Method = "lime" }),
            "no-texts" => Job() with { Texts = Array.Empty<JobText>() },
            "empty-text" => Job() with { Texts = new[] { new JobText { Id = "a", Text = "fine" }, new JobText { Id = "b", Text = "  " } } },
            "too-many-texts" => Job(7),
            "text-too-long" => Job() with { Texts = new[] { new JobText { Id = "a", Text = new string('x', 201) } } },
            "bad-target" => Job(options: new AttributionOptions { Target = "7" }),
            "model-folder-missing" => Job(model: "missing"),
            _ => throw new ArgumentOutOfRangeException(nameof(@case)),
        };
        var (outcome, batches) = await fleet.Run(job);

        Assert.False(outcome.Succeeded);
        Assert.Equal(job.JobId, outcome.Failed!.JobId);
        Assert.Equal(reason, outcome.Failed.ReasonCode);
        if (field is not null) Assert.Equal(field, outcome.Failed.Field);
        Assert.False(string.IsNullOrWhiteSpace(outcome.Failed.Message));
        if (reason == "limit-exceeded") Assert.Contains(field!, outcome.Failed.Message);
        Assert.Empty(batches);
        Assert.True(await fleet.Harness.Published.Any<AttributionJobFailed>(x => x.Context.Message.JobId == job.JobId));
        Assert.False(await fleet.Harness.Published.Any<Fault<SubmitAttributionJob>>());
        await AssertStillConsumes(fleet);
    }

    /// <summary>Throws for texts that contain "boom", counting calls.</summary>
    private sealed class FaultyEngine(IAttributionEngine inner) : IAttributionEngine
    {
        public int Throws;
        public IReadOnlyList<int> TokenLengths(string modelId, IReadOnlyList<string> texts, int? maxLength) => inner.TokenLengths(modelId, texts, maxLength);

        public IReadOnlyList<Explanation> Explain(string modelId, IReadOnlyList<string> texts, ExplainRequest request)
        {
            if (texts.Any(t => t.Contains("boom")))
            {
                Interlocked.Increment(ref Throws);
                throw new InvalidOperationException("simulated engine fault");
            }
            return inner.Explain(modelId, texts, request);
        }
    }

    [Fact]
    public async Task An_engine_exception_is_retried_then_fails_the_job_and_the_worker_keeps_consuming()
    {
        FaultyEngine? engine = null;
        await using var fleet = await Start(sp => engine = new FaultyEngine(new TextAttributionEngine(sp.GetRequiredService<ModelRegistry>(), sp.GetRequiredService<Microsoft.Extensions.Options.IOptions<AttributionFleet.Worker.Hosting.WorkerOptions>>(), sp.GetRequiredService<AttributionFleet.Engine.EngineThreads>())));
        var job = Job() with { Texts = new[] { new JobText { Id = "x", Text = "boom goes the engine" } } };
        var (outcome, _) = await fleet.Run(job);

        Assert.False(outcome.Succeeded);
        Assert.Equal("engine-error", outcome.Failed!.ReasonCode);
        Assert.Contains("simulated engine fault", outcome.Failed.Message);
        Assert.Equal(0, outcome.Failed.BatchIndex);
        Assert.Equal(3, engine!.Throws); // first try + 2 retries (Worker:RetryLimit)
        await AssertStillConsumes(fleet);
    }

    [Fact]
    public async Task A_redelivered_job_gives_one_completion_and_every_text_once()
    {
        await using var fleet = await Start();
        var job = Job(5);
        var batches = new List<AttributionBatchCompleted>();
        var collect = fleet.Client.Collect(job.JobId, b => { batches.Add(b); return Task.CompletedTask; }, null, new CancellationTokenSource(Timeout).Token);
        await fleet.Client.Submit(job);
        await fleet.Client.Submit(job); // the same job twice, as a broker redelivery would
        var outcome = await collect;

        Assert.True(outcome.Succeeded);
        Assert.Equal(5, batches.SelectMany(b => b.Results).Count());
        Assert.Equal(5, batches.SelectMany(b => b.Results).Select(r => r.Id).Distinct().Count());
        await Task.Delay(300);
        Assert.Equal(1, await fleet.Harness.Published.SelectAsync<AttributionJobCompleted>(x => x.Context.Message.JobId == job.JobId).Count());
    }

    [Fact]
    public async Task A_batch_published_directly_meets_the_limits_and_one_for_an_unknown_job_is_dropped()
    {
        await using var fleet = await Start();
        var store = fleet.Provider.GetRequiredService<AttributionFleet.Worker.Store.IJobStore>();
        var bus = fleet.Provider.GetRequiredService<IBus>();
        var batches = await bus.GetSendEndpoint(new Uri("queue:" + AttributionFleet.Contracts.V1.FleetAddresses.BatchQueue));

        // A job the store does not know: nothing is explained or stored.
        var stranger = Guid.NewGuid();
        await batches.Send(new ExplainAttributionBatch { JobId = stranger, ModelId = "tiny", BatchIndex = 0, BatchCount = 1, TextCount = 1, Texts = TinyModel.Texts(1) });
        Assert.True(await fleet.Harness.Consumed.Any<ExplainAttributionBatch>(x => x.Context.Message.JobId == stranger));
        Assert.Null(await store.Get(stranger));

        // An admitted job, and a batch for it that no planner would have made: over Limits:MaxCharactersPerText (200).
        var id = Guid.NewGuid();
        await store.Admit(new AttributionFleet.Worker.Store.NewJob(id, "tiny", "f", 1, 1, null, null, DateTimeOffset.UtcNow));
        await batches.Send(new ExplainAttributionBatch
        {
            JobId = id, ModelId = "tiny", BatchIndex = 0, BatchCount = 1, TextCount = 1,
            Texts = new[] { new JobText { Id = "long", Text = new string('x', 201) } },
        });
        var outcome = await fleet.Client.Collect(id, _ => Task.CompletedTask, null, new CancellationTokenSource(Timeout).Token);
        Assert.False(outcome.Succeeded);
        Assert.Equal("limit-exceeded", outcome.Failed!.ReasonCode);
        Assert.Equal("Limits:MaxCharactersPerText", outcome.Failed.Field);
        Assert.Equal(1, await fleet.Harness.Published.SelectAsync<AttributionJobFailed>(x => x.Context.Message.JobId == id).Count());
        await AssertStillConsumes(fleet);
    }

    [Fact]
    public async Task A_job_too_large_for_a_message_is_refused_before_sending_naming_the_limit()
    {
        await using var fleet = await Start();
        var job = Job(3) with { Texts = Enumerable.Range(0, 3).Select(i => new JobText { Id = $"x{i}", Text = new string('y', 190) }).ToList() };
        var limits = fleet.Provider.GetRequiredService<Microsoft.Extensions.Options.IOptions<LimitsOptions>>().Value;
        limits.MaxMessageBytes = 400;
        var e = await Assert.ThrowsAsync<JobTooLargeException>(() => fleet.Client.Submit(job));
        Assert.Contains("Limits:MaxMessageBytes", e.Message);
        Assert.Contains("400", e.Message);
        Assert.False(await fleet.Harness.Sent.Any<SubmitAttributionJob>(x => x.Context.Message.JobId == job.JobId));
    }
}
