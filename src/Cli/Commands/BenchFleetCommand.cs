using System.Diagnostics;
using System.Reflection;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet bench fleet</c>: end-to-end texts/s of N jobs through RabbitMQ with 1 and 2 worker processes, against the
/// engine alone in one process; the ratio is the messaging overhead.
/// </summary>
public static class BenchFleetCommand
{
    public const string Usage =
        "fleet bench fleet [--jobs 4] [--texts 32] [--workers 1,2] [--texts-per-batch 8] [--method deeplift] [--model DIR]\n" +
        "                  [--rabbitmq amqp://guest:guest@localhost:5672/] (default: FLEET_TEST_RABBITMQ)";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "jobs", "texts", "workers", "texts-per-batch", "method", "model", "rabbitmq" }, Array.Empty<string>());
        return RunAsync(cl, stdout).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(CommandLine cl, TextWriter stdout)
    {
        int jobs = cl.Int("jobs", 4), textsPerJob = cl.Int("texts", 32), perBatch = cl.Int("texts-per-batch", 8);
        var method = cl.Value("method") ?? "deeplift";
        var workerCounts = (cl.Value("workers") ?? "1,2").Split(',').Select(w => int.TryParse(w, out var n) && n > 0 ? n : throw new UsageException("--workers takes counts like 1,2")).ToList();
        var url = cl.Value("rabbitmq") ?? Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")
            ?? throw new UsageException("give --rabbitmq amqp://user:password@host:5672/ or set FLEET_TEST_RABBITMQ (there is no default user)");
        string? tempModel = null;
        var modelDir = cl.Value("model") ?? (tempModel = CreateModel());
        int cores = Environment.ProcessorCount;
        try
        {
            var allJobs = Enumerable.Range(0, jobs).Select(j => Texts(textsPerJob, j)).ToList();
            int total = jobs * textsPerJob;
            stdout.WriteLine($"bench fleet: {jobs} jobs x {textsPerJob} texts ({total} texts), method {method}, {perBatch} texts per batch, {cores} cores, model {modelDir}");

            double engineRate = await Task.Run(() => EngineAlone(modelDir, allJobs, method, perBatch, total));
            stdout.WriteLine($"  engine alone, 1 process ({cores} torch threads)      {engineRate,8:0.0} texts/s");

            foreach (int workers in workerCounts)
            {
                int threads = Math.Max(1, cores / workers);
                double rate = await ThroughFleet(url, modelDir, allJobs, method, perBatch, workers, threads, total);
                stdout.WriteLine($"  fleet via RabbitMQ, {workers} worker process{(workers == 1 ? "  " : "es")} ({threads} torch threads each) {rate,8:0.0} texts/s   engine/fleet = {engineRate / rate:0.00}x");
            }
            return 0;
        }
        finally
        {
            if (tempModel is not null) Directory.Delete(tempModel, recursive: true);
        }
    }

    private static string CreateModel()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"fleet-bench-model-{Guid.NewGuid():N}");
        using var model = RandomModels.Create(RandomModels.BertConfig(layers: 2, hidden: 128, heads: 4, intermediate: 256, vocab: 1000, labels: 2), seed: 1, std: 0.05);
        RandomModels.Save(model, dir);
        return dir;
    }

    private static List<JobText> Texts(int count, int job)
    {
        var random = new Random(job);
        return Enumerable.Range(0, count)
            .Select(i => new JobText { Id = $"{job}-{i}", Text = string.Join(' ', Enumerable.Range(0, random.Next(5, 40)).Select(k => $"w{k}")) })
            .ToList();
    }

    /// <summary>The same work without messaging: each job bucketed by token length and cut into batches as the workers do.</summary>
    private static double EngineAlone(string modelDir, List<List<JobText>> jobs, string method, int perBatch, int total)
    {
        TorchSharp.torch.set_num_threads(Environment.ProcessorCount); // as a worker with Worker:TorchThreads does
        using var model = LoadedModel.Load(modelDir);
        var explainer = new TextExplainer(model);
        var request = new ExplainRequest { Method = method };
        explainer.Explain(jobs[0].Take(perBatch).Select(t => t.Text).ToList(), request); // warm-up, as the workers get
        var watch = Stopwatch.StartNew();
        foreach (var job in jobs)
        {
            var texts = job.Select(t => t.Text).ToList();
            var lengths = explainer.Tokenize(texts).Select(t => t.Ids.Length).ToList();
            foreach (var batch in Enumerable.Range(0, texts.Count).OrderByDescending(i => lengths[i]).Chunk(perBatch))
                explainer.Explain(batch.Select(i => texts[i]).ToList(), request);
        }
        return total / watch.Elapsed.TotalSeconds;
    }

    private static async Task<double> ThroughFleet(string url, string modelDir, List<List<JobText>> jobs, string method, int perBatch,
        int workerCount, int threads, int total)
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var env = new Dictionary<string, string>
        {
            ["Worker__Transport"] = "RabbitMq",
            ["RabbitMq__Url"] = url,
            ["Worker__JobQueue"] = $"bench-{tag}-jobs",
            ["Worker__BatchQueue"] = $"bench-{tag}-batches",
            ["Worker__TextsPerBatch"] = perBatch.ToString(),
            ["Worker__TorchThreads"] = threads.ToString(),
            ["Models__bench__Path"] = modelDir,
            ["Logging__LogLevel__Default"] = "Warning",
            // The job store the workers commit to and the client reads: a SQLite file of this run.
            ["Store__ConnectionString"] = $"Data Source={Path.Combine(Path.GetTempPath(), $"bench-{tag}-jobs.db")}",
        };
        var (file, prefix) = SelfCommand();
        var workers = Enumerable.Range(0, workerCount).Select(i => WorkerProcess.Start(file, prefix.Append("worker"), env, $"bench-{i}")).ToList();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Worker:Transport"] = "RabbitMq",
            ["Worker:ConsumeJobs"] = "false",
            ["Worker:JobQueue"] = env["Worker__JobQueue"],
            ["RabbitMq:Url"] = url,
            ["Store:ConnectionString"] = env["Store__ConnectionString"],
            ["Store:PollIntervalMs"] = "20",
        }).Build();
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Warning));
        services.AddAttributionFleet(configuration);
        await using var provider = services.BuildServiceProvider();
        var bus = provider.GetRequiredService<IBusControl>();
        try
        {
            await Task.WhenAll(workers.Select(w => w.WaitReady(TimeSpan.FromSeconds(90))));
            await bus.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
            var client = provider.GetRequiredService<FleetClient>();
            // Warm-up: one small job per worker so every worker has run the model once.
            await Task.WhenAll(Enumerable.Range(0, workerCount).Select(i => RunJob(client, jobs[0].Take(perBatch).ToList(), method)));
            var watch = Stopwatch.StartNew();
            await Task.WhenAll(jobs.Select(j => RunJob(client, j, method)));
            return total / watch.Elapsed.TotalSeconds;
        }
        finally
        {
            foreach (var w in workers) w.Dispose();
            await bus.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        }
    }

    private static async Task RunJob(FleetClient client, List<JobText> texts, string method)
    {
        var job = new SubmitAttributionJob
        {
            JobId = Guid.NewGuid(),
            ModelId = "bench",
            Texts = texts,
            Options = new AttributionOptions { Method = method },
            SubmittedAt = DateTimeOffset.UtcNow,
        };
        int received = 0;
        var collect = client.Collect(job.JobId, b => { received += b.Results.Count; return Task.CompletedTask; }, null, new CancellationTokenSource(TimeSpan.FromMinutes(10)).Token);
        await client.Submit(job);
        var outcome = await collect;
        if (!outcome.Succeeded) throw new InvalidOperationException($"bench job failed: {outcome.Failed!.ReasonCode}: {outcome.Failed.Message}");
        if (received != texts.Count) throw new InvalidOperationException($"bench job returned {received} of {texts.Count} texts");
    }

    /// <summary>How to run this CLI again: the apphost, or <c>dotnet fleet.dll</c>.</summary>
    private static (string File, string[] Prefix) SelfCommand()
    {
        var process = Environment.ProcessPath ?? "dotnet";
        var name = Path.GetFileNameWithoutExtension(process);
        return name == "dotnet" ? (process, new[] { Assembly.GetEntryAssembly()!.Location }) : (process, Array.Empty<string>());
    }
}
