using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using MassTransit;
using MassTransit.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace AttributionFleet.Fleet.Tests;

/// <summary>
/// Issue #16 through the fleet: the job options faithfulness and target "all" reach the engine, every result carries its
/// class rows, weak-reference flag and faithfulness, and AttributionJobCompleted summarizes faithfulness over the job.
/// </summary>
public sealed class JobFaithfulnessTests
{
    [Fact]
    public async Task FaithfulnessAndEveryTargetTravelThroughTheFleet()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Models:tiny:Path"] = TinyModel.Path,
            ["Worker:TextsPerBatch"] = "2",
            ["Worker:PreloadModels"] = "false",
        }).Build();
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddFleetServices(configuration);
        var worker = configuration.GetSection(WorkerOptions.Section).Get<WorkerOptions>()!;
        services.AddMassTransitTestHarness(x => x.AddFleetBus(worker, new RabbitMqOptions()));
        await using var provider = services.BuildServiceProvider(true);
        var harness = provider.GetRequiredService<ITestHarness>();
        await harness.Start();
        try
        {
            var client = provider.GetRequiredService<FleetClient>();
            var job = new SubmitAttributionJob
            {
                JobId = Guid.NewGuid(),
                ModelId = "tiny",
                Texts = TinyModel.Texts(5, "f"),
                Options = new AttributionOptions { Target = "all", Faithfulness = true, Precision = "float64", WeakReferenceThreshold = 0.2 },
                SubmittedAt = DateTimeOffset.UtcNow,
            };
            var batches = new List<AttributionBatchCompleted>();
            var collect = client.Collect(job.JobId, b => { batches.Add(b); return Task.CompletedTask; }, null, new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
            await client.Submit(job);
            var outcome = await collect;
            Assert.True(outcome.Succeeded, outcome.Failed?.Message);
            var results = batches.SelectMany(b => b.Results).ToList();
            Assert.Equal(5, results.Count);
            foreach (var r in results)
            {
                Assert.Equal(2, r.Classes!.Count);
                Assert.Equal(r.Scores, r.Classes[r.TargetIndex].Scores);
                Assert.All(r.Classes, c => Assert.InRange(Math.Abs(c.Delta), 0, 1e-10));
                Assert.NotNull(r.WeakReference);
                Assert.Equal(Math.Abs(r.ProbabilityChange!.Value) < 0.2, r.WeakReference);
                Assert.Equal(4, r.Faithfulness!.Comprehensiveness.Count);
            }
            var summary = outcome.Completed!.Faithfulness!;
            Assert.Equal(5, summary.Comprehensiveness.Count);
            var means = results.Select(r => r.Faithfulness!.ComprehensivenessMean).OrderBy(v => v).ToList();
            Assert.Equal(means.Average(), summary.Comprehensiveness.Mean, 12);
            Assert.Equal(means[0], summary.Comprehensiveness.P5); // nearest rank of 5 values: the smallest
            Assert.Equal(means[^1], summary.Comprehensiveness.P95); // and the largest
            Assert.Equal(results.Sum(r => (long)r.Faithfulness!.PerturbedInputs), summary.PerturbedInputs);
            Assert.Equal(results.Count(r => r.WeakReference == true), outcome.Completed.WeakReferences);
        }
        finally
        {
            await harness.Stop();
        }
    }
}
