using System.Net;
using System.Text.Json;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Store;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace AttributionFleet.Fleet.Tests.Http;

/// <summary>The worker's Kestrel server: health, /metrics, the OpenAPI description and the job API that clients without database
/// credentials read jobs through (any number of readers, any number of times), and deletion.</summary>
[Collection(TelemetryCollection.Name)]
public sealed class JobApiTests
{
    private static IHost Host(Dictionary<string, string?> settings)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = Array.Empty<string>(), DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddAttributionFleet(builder.Configuration);
        return builder.Build();
    }

    [Fact]
    public async Task Readers_without_database_credentials_read_a_finished_job_through_the_api_as_often_as_they_like()
    {
        int port = Tools.FreePort();
        using var worker = Host(new()
        {
            ["Models:tiny:Path"] = TinyModel.Path,
            ["Worker:TextsPerBatch"] = "3",
            ["Worker:HealthPort"] = port.ToString(),
            ["Store:PollIntervalMs"] = "20",
        });
        await worker.StartAsync();
        try
        {
            var job = new SubmitAttributionJob { JobId = Guid.NewGuid(), ModelId = "tiny", Texts = TinyModel.Texts(10, "api"), SubmittedAt = DateTimeOffset.UtcNow };
            var local = worker.Services.GetRequiredService<FleetClient>();
            var collect = local.Collect(job.JobId, _ => Task.CompletedTask, null, new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
            await local.Submit(job);
            Assert.True((await collect).Succeeded);

            using var reader = Host(new()
            {
                ["Worker:ConsumeJobs"] = "false",
                ["Store:Api"] = $"http://localhost:{port}",
                ["Store:PollIntervalMs"] = "20",
            });
            var remote = reader.Services.GetRequiredService<FleetClient>();
            Assert.StartsWith("the job API", remote.Source);
            var status = await remote.Status(job.JobId);
            Assert.Equal(JobStates.Completed, status!.State);
            Assert.Equal(10, status.TextsDone);
            Assert.Equal(4, status.Completed!.BatchCount);

            // Three readers at once, twice each: every text once per read.
            var reads = await Task.WhenAll(Enumerable.Range(0, 6).Select(async _ =>
            {
                var ids = new List<string>();
                await foreach (var r in remote.Results(job.JobId)) { ids.Add(r.Id); Assert.Equal(r.Tokens.Count, r.Offsets!.Count); }
                return ids;
            }));
            Assert.All(reads, ids => Assert.Equal(job.Texts.Select(t => t.Id).Order(), ids.Order()));
            var batches = new List<AttributionBatchCompleted>();
            var outcome = await remote.Collect(job.JobId, b => { batches.Add(b); return Task.CompletedTask; });
            Assert.True(outcome.Succeeded);
            Assert.Equal(10, batches.Sum(b => b.Results.Count));

            using var http = new HttpClient { BaseAddress = new Uri($"http://localhost:{port}") };
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health/live")).StatusCode);
            var ready = await http.GetAsync("/health/ready");
            var readyBody = await ready.Content.ReadAsStringAsync();
            Assert.True(ready.StatusCode == HttpStatusCode.OK, readyBody);
            Assert.Contains("\"store\"", readyBody);
            var metrics = await http.GetStringAsync("/metrics");
            Assert.Contains("attribution_texts_processed_total", metrics);
            using var openApi = JsonDocument.Parse(await http.GetStringAsync("/openapi/v1.json"));
            var paths = openApi.RootElement.GetProperty("paths").EnumerateObject().Select(p => p.Name).ToList();
            Assert.Contains("/jobs/{jobId}", paths);
            Assert.Contains("/jobs/{jobId}/results", paths);
            Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync($"/jobs/{Guid.NewGuid()}")).StatusCode);

            Assert.True(await remote.Delete(job.JobId));
            Assert.Null(await remote.Status(job.JobId));
            Assert.False(await remote.Delete(job.JobId));
        }
        finally
        {
            await worker.StopAsync();
        }
    }

    [Fact]
    public async Task Non_finite_numbers_are_null_in_the_store_and_the_api_never_NaN_strings()
    {
        int port = Tools.FreePort();
        using var worker = Host(new()
        {
            ["Worker:HealthPort"] = port.ToString(),
            ["Store:PollIntervalMs"] = "20",
        });
        await worker.StartAsync();
        try
        {
            var store = worker.Services.GetRequiredService<IJobStore>();
            var id = Guid.NewGuid();
            await store.Admit(new NewJob(id, "tiny", "f", 2, 1, 1e-3, null, DateTimeOffset.UtcNow));
            var commit = await store.CommitBatch(new AttributionBatchCompleted
            {
                JobId = id, ModelId = "tiny", BatchIndex = 0, BatchCount = 1, TextCount = 2, Worker = "w", CompletedAt = DateTimeOffset.UtcNow,
                Results = new List<TextAttribution>
                {
                    new()
                    {
                        Id = "nan", Text = "a b", Tokens = new[] { "[CLS]", "a", "b", "[SEP]" }, Scores = new[] { 0.0, double.NaN, double.PositiveInfinity, 0.0 },
                        Prediction = new PredictedLabel { Label = "pos", Index = 1, Probability = double.NaN },
                        Fx = double.NaN, Fx0 = 0.5, Delta = double.NaN, RelativeDelta = double.NegativeInfinity, OverThreshold = true,
                        Status = "non_finite", Method = "deeplift",
                    },
                    // A regression head has no probability by design (NaN): null in JSON, yet the text is ok.
                    new()
                    {
                        Id = "regression", Text = "c", Tokens = new[] { "[CLS]", "c", "[SEP]" }, Scores = new[] { 0.0, 0.75, 0.0 },
                        Prediction = new PredictedLabel { Label = "value", Index = 0, Probability = double.NaN },
                        Fx = 1.25, Fx0 = 0.5, Delta = 0, Status = "ok", Method = "deeplift",
                    },
                },
            });
            Assert.NotNull(commit.Completed);

            using var http = new HttpClient { BaseAddress = new Uri($"http://localhost:{port}") };
            foreach (var path in new[] { $"/jobs/{id}", $"/jobs/{id}/results", $"/jobs/{id}/batches/0" })
            {
                var body = await http.GetStringAsync(path);
                Assert.DoesNotContain("NaN", body);
                Assert.DoesNotContain("Infinity", body);
            }
            var lines = (await http.GetStringAsync($"/jobs/{id}/results")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => JsonDocument.Parse(l).RootElement).ToDictionary(e => e.GetProperty("id").GetString()!);
            var nan = lines["nan"];
            Assert.Equal("non_finite", nan.GetProperty("status").GetString());
            Assert.Equal(JsonValueKind.Null, nan.GetProperty("delta").ValueKind);
            Assert.Equal(JsonValueKind.Null, nan.GetProperty("fx").ValueKind);
            Assert.Equal(JsonValueKind.Null, nan.GetProperty("relativeDelta").ValueKind);
            Assert.Equal(new[] { JsonValueKind.Number, JsonValueKind.Null, JsonValueKind.Null, JsonValueKind.Number },
                nan.GetProperty("scores").EnumerateArray().Select(x => x.ValueKind));
            Assert.Equal(0.5, nan.GetProperty("fx0").GetDouble());
            var regression = lines["regression"];
            Assert.Equal("ok", regression.GetProperty("status").GetString());
            Assert.Equal(JsonValueKind.Null, regression.GetProperty("prediction").GetProperty("probability").ValueKind);
            Assert.Equal(1.25, regression.GetProperty("fx").GetDouble());

            // Read back (store directly, and through the API): NaN again, the status as written.
            using var reader = Host(new() { ["Worker:ConsumeJobs"] = "false", ["Store:Api"] = $"http://localhost:{port}" });
            foreach (var client in new[] { worker.Services.GetRequiredService<FleetClient>(), reader.Services.GetRequiredService<FleetClient>() })
            {
                var results = new List<TextAttribution>();
                await foreach (var r in client.Results(id)) results.Add(r);
                var n = results.Single(r => r.Id == "nan");
                Assert.True(double.IsNaN(n.Delta) && double.IsNaN(n.Fx) && double.IsNaN(n.Scores[1]) && double.IsNaN(n.Scores[2]));
                Assert.Equal("non_finite", n.Status);
                Assert.Equal("ok", results.Single(r => r.Id == "regression").Status);
                Assert.True(double.IsNaN((await client.Status(id))!.Completed!.Delta.Max));
            }
        }
        finally
        {
            await worker.StopAsync();
        }
    }

    [Fact]
    public async Task An_unreachable_api_is_one_line_naming_it()
    {
        int port = Tools.FreePort();
        using var reader = new AttributionFleet.Worker.Http.HttpJobReader($"http://127.0.0.1:{port}", 2);
        var e = await Assert.ThrowsAsync<FleetUnavailableException>(() => reader.Get(Guid.NewGuid()));
        Assert.Contains($"127.0.0.1:{port}", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
