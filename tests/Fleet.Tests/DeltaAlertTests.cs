using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Telemetry;
using MassTransit;
using MassTransit.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Fleet.Tests;

/// <summary>
/// Delta alerts at the source, on an in-memory worker with the 2-layer stress model: the softmax rule <c>rescale</c>
/// breaks a relative threshold of 1e-3 (its delta is ~1e-2..1) and <c>exact</c> does not (float64: ~1e-13). For the
/// first the flag, the metric, the warning (with the job id in scope) and <see cref="AttributionDeltaExceeded"/> appear;
/// for the second none of them.
/// </summary>
[Collection(TelemetryCollection.Name)]
public sealed class DeltaAlertTests(ITestOutputHelper output)
{
    private const double Threshold = 1e-3;

    private sealed record Measured(string Instrument, long Value, IReadOnlyDictionary<string, object?> Tags);

    [Fact]
    public async Task Rescale_breaks_the_threshold_and_is_flagged_counted_logged_and_announced_exact_is_not()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Models:stress:Path"] = TinyModel.Path,
            ["Models:stress:Methods:deeplift:RelativeDeltaThreshold"] = Threshold.ToString("R"),
            ["Worker:TextsPerBatch"] = "2",
            ["Worker:PreloadModels"] = "false",
        }).Build();
        var logs = new CapturingLoggerProvider();
        var services = new ServiceCollection();
        services.AddLogging(l => l.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        services.AddFleetServices(configuration);
        var worker = configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>()!;
        services.AddMassTransitTestHarness(x => x.AddFleetBus(worker, new RabbitMqOptions()));
        await using var provider = services.BuildServiceProvider(true);

        // The fleet's own instruments in this provider (not those of other tests running in parallel).
        var meterFactory = provider.GetRequiredService<IMeterFactory>();
        var measured = new ConcurrentQueue<Measured>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == FleetMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, meterFactory)) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            measured.Enqueue(new Measured(instrument.Name, value, ToDictionary(tags))));
        listener.Start();
        _ = provider.GetRequiredService<FleetMetrics>();

        var harness = provider.GetRequiredService<ITestHarness>();
        await harness.Start();
        try
        {
            var client = provider.GetRequiredService<FleetClient>();
            var exact = Job("exact");
            var rescale = Job("rescale");
            var exactResults = await Run(client, exact);
            var rescaleResults = await Run(client, rescale);
            foreach (var r in exactResults.Concat(rescaleResults))
                output.WriteLine($"{r.SoftmaxRule,-8} {r.Id}: relative delta {r.RelativeDelta:E2}, over {r.OverThreshold}");

            // The flag.
            Assert.All(exactResults, r => Assert.True(r.RelativeDelta < 1e-9 && !r.OverThreshold, $"exact {r.Id}: {r.RelativeDelta}"));
            var over = rescaleResults.Where(r => r.OverThreshold).ToList();
            Assert.NotEmpty(over);
            Assert.All(rescaleResults, r => Assert.Equal(r.RelativeDelta > Threshold, r.OverThreshold));

            // The metric: attribution.texts.over_threshold, tagged with the rule, only for rescale.
            var overCounts = measured.Where(m => m.Instrument == "attribution.texts.over_threshold").ToList();
            Assert.Equal(over.Count, overCounts.Sum(m => m.Value));
            Assert.All(overCounts, m =>
            {
                Assert.Equal("rescale", m.Tags["softmax_rule"]);
                Assert.Equal("stress", m.Tags["model"]);
                Assert.Equal("deeplift", m.Tags["method"]);
                Assert.Equal("float64", m.Tags["precision"]);
                Assert.Equal("cpu", m.Tags["device"]);
            });
            var processed = measured.Where(m => m.Instrument == "attribution.texts.processed").ToList();
            Assert.Equal(exact.Texts.Count, processed.Where(m => Equals(m.Tags["softmax_rule"], "exact")).Sum(m => m.Value));
            Assert.Equal(rescale.Texts.Count, processed.Where(m => Equals(m.Tags["softmax_rule"], "rescale")).Sum(m => m.Value));

            // The log line: a warning naming the job and the text, with the job id in scope.
            var warnings = logs.Entries.Where(e => e.Level == LogLevel.Warning && e.Message.StartsWith("Delta over threshold", StringComparison.Ordinal)).ToList();
            Assert.Equal(over.Count, warnings.Count);
            foreach (var r in over)
                Assert.Contains(warnings, w => w.Message.Contains(rescale.JobId.ToString()) && w.Message.Contains($"text {r.Id} ")
                    && Equals(w.Scope.GetValueOrDefault("JobId"), rescale.JobId));
            Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Warning && e.Message.Contains(exact.JobId.ToString()));
            Assert.Contains(logs.Entries, e => Equals(e.Scope.GetValueOrDefault("JobId"), exact.JobId)); // its info lines carry the scope too

            // The event.
            var events = await harness.Published.SelectAsync<AttributionDeltaExceeded>(x => x.Context.Message.JobId == rescale.JobId).ToListAsync();
            Assert.Equal(over.Select(r => r.Id).Order(), events.Select(e => e.Context.Message.TextId).Order());
            Assert.All(events, e =>
            {
                Assert.Equal("stress", e.Context.Message.ModelId);
                Assert.Equal("deeplift", e.Context.Message.Method);
                Assert.Equal("rescale", e.Context.Message.SoftmaxRule);
                Assert.Equal(Threshold, e.Context.Message.RelativeThreshold);
                Assert.True(e.Context.Message.RelativeDelta > Threshold);
            });
            Assert.False(await harness.Published.Any<AttributionDeltaExceeded>(x => x.Context.Message.JobId == exact.JobId));
        }
        finally
        {
            await harness.Stop();
        }
    }

    [Fact]
    public void A_job_may_tighten_the_configured_threshold_but_not_loosen_it()
    {
        var model = new ModelOptions
        {
            DeltaThreshold = 1e-2,
            RelativeDeltaThreshold = 1e-3,
            Methods = { ["integrated-gradients"] = new DeltaThresholdOptions { RelativeDeltaThreshold = 1e-2 } },
        };
        Assert.Equal((1e-2, 1e-3), model.Thresholds("deeplift", null, null));
        Assert.Equal((1e-2, 1e-4), model.Thresholds("deeplift", null, 1e-4));
        Assert.Equal((1e-2, 1e-3), model.Thresholds("deeplift", 1.0, 0.5));
        Assert.Equal((1e-2, 1e-2), model.Thresholds("Integrated-Gradients", null, null));
        Assert.Equal(((double?)null, (double?)1e-5), new ModelOptions().Thresholds("deeplift", null, 1e-5));
    }

    private static SubmitAttributionJob Job(string softmaxRule) => new()
    {
        JobId = Guid.NewGuid(),
        ModelId = "stress",
        Texts = TinyModel.Texts(4, softmaxRule + "-"),
        Options = new AttributionOptions { SoftmaxRule = softmaxRule, Precision = "float64" },
        SubmittedAt = DateTimeOffset.UtcNow,
    };

    private static async Task<List<TextAttribution>> Run(FleetClient client, SubmitAttributionJob job)
    {
        var results = new List<TextAttribution>();
        var collect = client.Collect(job.JobId, b => { results.AddRange(b.Results); return Task.CompletedTask; }, null,
            new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        await client.Submit(job);
        var outcome = await collect;
        Assert.True(outcome.Succeeded, outcome.Failed?.Message);
        return results;
    }

    private static Dictionary<string, object?> ToDictionary(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var d = new Dictionary<string, object?>();
        foreach (var (k, v) in tags) d[k] = v;
        return d;
    }
}
