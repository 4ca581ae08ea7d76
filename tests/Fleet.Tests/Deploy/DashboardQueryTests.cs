using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Models;
using AttributionFleet.Fleet.Tests.Support;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Fleet.Tests.Deploy;

/// <summary>
/// The Grafana dashboard against real data: an in-process worker (in-memory transport, Prometheus exporter on a free
/// loopback port, a 1-layer stress model) explains jobs (exact, rescale over a 1e-3 relative threshold, and one that
/// fails); a real Prometheus (Debian package) scrapes it every second with deploy/prometheus/alerts.yml loaded. Every
/// panel query of deploy/grafana/dashboards/attribution-delta.json must parse and return data, and the delta alert
/// must go pending for the rescale jobs. Queue-depth panels need RabbitMQ's plugin: they must parse and may be empty.
/// </summary>
[Collection(TelemetryCollection.Name)]
public sealed class DashboardQueryTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [ToolFact("prometheus")]
    public async Task Every_panel_query_parses_and_returns_data_from_a_scraped_worker()
    {
        var watch = Stopwatch.StartNew();
        var temp = Directory.CreateTempSubdirectory("dashboard-test-");
        Process? prometheus = null;
        try
        {
            var modelDir = Path.Combine(temp.FullName, "model");
            using (var m = RandomModels.Create(RandomModels.BertConfig(layers: 1, hidden: 32, heads: 4, intermediate: 64, vocab: 200, labels: 2), 11, std: 0.1, stress: true))
                RandomModels.Save(m, modelDir);

            int metricsPort = Tools.FreePort();
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = Array.Empty<string>(), DisableDefaults = true });
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["Models:tiny1:Path"] = modelDir,
                ["Models:tiny1:RelativeDeltaThreshold"] = "1e-3",
                ["Worker:TextsPerBatch"] = "4",
                ["Telemetry:ServiceName"] = "attribution-worker-test",
                ["Telemetry:PrometheusPort"] = metricsPort.ToString(),
                ["Telemetry:PrometheusHost"] = "localhost",
            });
            builder.Logging.SetMinimumLevel(LogLevel.Warning);
            builder.Services.AddAttributionFleet(builder.Configuration);
            using var host = builder.Build();
            await host.StartAsync();
            var client = host.Services.GetRequiredService<FleetClient>();

            int promPort = Tools.FreePort();
            // 2 s scrapes with a 2 s timeout: with 1 s, a loaded 2-core CI machine answered /metrics too late, the scrape
            // failed and the series went stale mid-test.
            var config = Path.Combine(temp.FullName, "prometheus.yml");
            File.WriteAllText(config, $"""
                global:
                  scrape_interval: 2s
                  scrape_timeout: 2s
                  evaluation_interval: 1s
                rule_files:
                  - {RepoPaths.Path("deploy", "prometheus", "alerts.yml")}
                scrape_configs:
                  - job_name: attribution-workers
                    static_configs:
                      - targets: ["localhost:{metricsPort}"]
                """);
            prometheus = Process.Start(new ProcessStartInfo(Tools.Prometheus!)
            {
                ArgumentList = { $"--config.file={config}", $"--storage.tsdb.path={Path.Combine(temp.FullName, "tsdb")}", $"--web.listen-address=127.0.0.1:{promPort}" },
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            })!;
            prometheus.OutputDataReceived += (_, _) => { };
            prometheus.ErrorDataReceived += (_, _) => { };
            prometheus.BeginOutputReadLine();
            prometheus.BeginErrorReadLine();
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{promPort}/"), Timeout = TimeSpan.FromSeconds(5) };

            // Wave 1: exact, rescale (over the threshold) and a job that fails; wait until Prometheus has scraped them.
            await RunJob(client, "exact");
            await RunJob(client, "rescale");
            await RunJob(client, "exact", model: "no-such-model");
            await Until(http, "attribution_texts_over_threshold_total", r => r.Count > 0);
            await Until(http, "attribution_job_failures_total", r => r.Count > 0);
            // Wave 2: the counters move between scrapes, so rates are non-zero and the delta alert goes pending.
            await RunJob(client, "rescale");
            await RunJob(client, "exact", model: "no-such-model");
            await Until(http, "sum(attribution_texts_over_threshold_total)", r => r.Count > 0 && Value(r[0]) >= 8);
            await Until(http, "sum(attribution_job_failures_total)", r => r.Count > 0 && Value(r[0]) >= 2);
            await Until(http, "ALERTS{alertname=\"AttributionDeltaHigh\",model=\"tiny1\",method=\"deeplift\"}", r => r.Count > 0);
            output.WriteLine($"data in Prometheus after {watch.Elapsed.TotalSeconds:0.0} s");

            var dashboard = JsonDocument.Parse(File.ReadAllText(RepoPaths.Path("deploy", "grafana", "dashboards", "attribution-delta.json"))).RootElement;
            Assert.Equal("Attribution delta", dashboard.GetProperty("title").GetString());
            var queries = dashboard.GetProperty("panels").EnumerateArray()
                .SelectMany(p => p.GetProperty("targets").EnumerateArray().Select(t => (Panel: p.GetProperty("title").GetString()!, Expr: t.GetProperty("expr").GetString()!)))
                .ToList();
            Assert.True(queries.Count >= 15, $"{queries.Count} queries");
            var failures = new List<string>();
            foreach (var (panel, expr) in queries)
            {
                var promql = Substitute(expr);
                var (status, result, error) = await Query(http, promql);
                output.WriteLine($"{panel}: {result.Count} series  <- {promql}");
                if (status != "success") failures.Add($"{panel}: does not parse/evaluate ({error}): {promql}");
                // RabbitMQ's plugin is not scraped here: those queries only have to parse and evaluate.
                else if (result.Count == 0 && !expr.Contains("rabbitmq_")) failures.Add($"{panel}: no data: {promql}");
            }
            // The template variables (label_values(metric, label)).
            foreach (var v in dashboard.GetProperty("templating").GetProperty("list").EnumerateArray())
            {
                var m = Regex.Match(v.GetProperty("query").GetProperty("query").GetString()!, @"^label_values\((.+),\s*(\w+)\)$");
                Assert.True(m.Success, v.ToString());
                var (status, result, _) = await Query(http, Substitute(m.Groups[1].Value));
                if (status != "success" || !result.Any(s => s.GetProperty("metric").TryGetProperty(m.Groups[2].Value, out _)))
                    failures.Add($"variable {v.GetProperty("name")}: no values for {m.Value}");
            }
            Assert.True(failures.Count == 0, string.Join("\n", failures));
            output.WriteLine($"done in {watch.Elapsed.TotalSeconds:0.0} s");
            await host.StopAsync();
        }
        finally
        {
            if (prometheus is { HasExited: false }) prometheus.Kill();
            prometheus?.WaitForExit(5000);
            prometheus?.Dispose();
            try { temp.Delete(recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>Grafana's variables as the dashboard's "All" would give them.</summary>
    private static string Substitute(string expr) => expr
        .Replace("$__rate_interval", "1m").Replace("$__range", "5m").Replace("$__interval", "15s")
        .Replace("$model", ".*").Replace("$method", ".*");

    private static async Task RunJob(FleetClient client, string softmaxRule, string model = "tiny1")
    {
        var job = new SubmitAttributionJob
        {
            JobId = Guid.NewGuid(),
            ModelId = model,
            Texts = TinyModel.Texts(4, softmaxRule + "-"),
            // Faithfulness on: the faithfulness and weak-reference panels need data too.
            Options = new AttributionOptions { SoftmaxRule = softmaxRule, Faithfulness = true },
            SubmittedAt = DateTimeOffset.UtcNow,
        };
        var collect = client.Collect(job.JobId, _ => Task.CompletedTask, null, new CancellationTokenSource(Wait).Token);
        await client.Submit(job);
        var outcome = await collect;
        Assert.Equal(model == "tiny1", outcome.Succeeded);
    }

    private static double Value(JsonElement series) =>
        double.Parse(series.GetProperty("value")[1].GetString()!, System.Globalization.CultureInfo.InvariantCulture);

    private static async Task<(string Status, List<JsonElement> Result, string? Error)> Query(HttpClient http, string promql)
    {
        using var response = await http.GetAsync("api/v1/query?query=" + Uri.EscapeDataString(promql));
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var status = body.GetProperty("status").GetString()!;
        if (status != "success") return (status, new List<JsonElement>(), body.TryGetProperty("error", out var e) ? e.GetString() : null);
        var data = body.GetProperty("data");
        var result = data.GetProperty("resultType").GetString() == "scalar" ? new List<JsonElement> { data } : data.GetProperty("result").EnumerateArray().ToList();
        return (status, result, null);
    }

    private static async Task Until(HttpClient http, string promql, Func<List<JsonElement>, bool> done)
    {
        var deadline = DateTime.UtcNow + Wait;
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                var (status, result, error) = await Query(http, promql);
                if (status == "success" && done(result)) return;
                last = error ?? string.Join(", ", result);
            }
            catch (Exception e) when (e is HttpRequestException or JsonException or TaskCanceledException)
            {
                last = e.Message; // Prometheus is still starting ("Service Unavailable" is not JSON)
            }
            await Task.Delay(250);
        }
        throw new TimeoutException($"Prometheus never answered '{promql}' as expected within {Wait.TotalSeconds} s; last: {last}");
    }
}
