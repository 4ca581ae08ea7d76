using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

using AttributionFleet.Worker.Models;

namespace AttributionFleet.Cli.Commands;

/// <summary><c>fleet submit --model ID --input FILE [explain flags] [--out FILE] [--no-wait]</c>: a job through the fleet.</summary>
public static class SubmitCommand
{
    public const string Usage =
        "fleet submit [--model ID (default sentiment-minilm)] --input texts.txt|texts.jsonl [--method … and the other flags of fleet explain]\n" +
        "             [--delta-threshold X] [--relative-delta-threshold X] [--texts-per-batch N] [--out results.jsonl] [--no-wait] [--timeout SECONDS] [--verbose]\n" +
        "             " + FleetHost.OptionsUsage + "\n" +
        "             (--transport inmemory runs a worker in this process: no broker needed)";

    private static readonly string[] Own = { "out", "delta-threshold", "relative-delta-threshold", "texts-per-batch", "timeout", "job-id" };

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, ExplainCommand.ValueOptions.Concat(FleetHost.ValueOptions).Concat(Own).Distinct().ToArray(), new[] { "no-wait", "json", "verbose" });
        var modelId = cl.Value("model") ?? DefaultModel.Id;
        var texts = TextInput.Read(cl);
        var job = new SubmitAttributionJob
        {
            JobId = cl.Value("job-id") is { } id ? (Guid.TryParse(id, out var g) ? g : throw new UsageException($"--job-id must be a GUID, got '{id}'")) : Guid.NewGuid(),
            ModelId = modelId,
            Texts = texts.Select(t => new JobText { Id = t.Id, Text = t.Text }).ToList(),
            Options = Options(cl),
            DeltaThreshold = cl.Value("delta-threshold") is { } d ? Double(d, "delta-threshold") : null,
            RelativeDeltaThreshold = cl.Value("relative-delta-threshold") is { } rd ? Double(rd, "relative-delta-threshold") : null,
            TextsPerBatch = cl.Value("texts-per-batch") is null ? null : cl.Int("texts-per-batch", 0),
            SubmittedAt = DateTimeOffset.UtcNow,
        };
        try
        {
            using var host = FleetHost.Build(cl, consumeJobs: null, cl.Flag("verbose") ? LogLevel.Information : LogLevel.Warning);
            if (cl.Flag("no-wait") && !FleetHost.UsesRabbitMq(host))
                throw new UsageException("--no-wait needs a broker (--transport rabbitmq): an in-memory job lives only as long as this process");
            return Run(host, job, cl, stdout).GetAwaiter().GetResult();
        }
        catch (AttributionFleet.Worker.Hosting.FleetConfigurationException e)
        {
            Console.Error.WriteLine($"fleet submit: {e.Message}");
            return 2;
        }
        catch (JobTooLargeException e)
        {
            Console.Error.WriteLine($"fleet submit: {e.Message}");
            return 1;
        }
        catch (FleetUnavailableException e)
        {
            // One line naming the host and the cause (#15's top-level handler maps this the same way).
            Console.Error.WriteLine($"fleet submit: {e.Message}");
            return 3;
        }
    }

    private static async Task<int> Run(IHost host, SubmitAttributionJob job, CommandLine cl, TextWriter stdout)
    {
        await host.StartAsync();
        try
        {
            var client = host.Services.GetRequiredService<FleetClient>();
            client.CheckSize(job); // before anything is sent or started
            if (cl.Flag("no-wait"))
            {
                await client.Submit(job);
                stdout.WriteLine(job.JobId);
                Console.Error.WriteLine($"submitted job {job.JobId} ({job.Texts.Count} texts); collect it with: fleet results {job.JobId} --out results.jsonl");
                return 0;
            }
            return await ResultsCommand.Collect(client, job.JobId, cl, stdout, () => client.Submit(job));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>The explain flags as message options; unset flags stay null (the worker's and model's defaults).</summary>
    public static AttributionOptions Options(CommandLine cl) => new()
    {
        Method = cl.Value("method"),
        Target = cl.Value("target"),
        Output = cl.Value("output"),
        SoftmaxRule = cl.Value("softmax-rule"),
        Precision = cl.Value("precision"),
        Steps = cl.Value("steps") is null ? null : cl.Int("steps", 0),
        Integration = cl.Value("integration"),
        Samples = cl.Value("samples") is null ? null : cl.Int("samples", 0),
        References = cl.Values("reference") is { Count: > 0 } r ? r.ToList() : null,
        BatchSize = cl.Value("batch-size") is null ? null : cl.Int("batch-size", 0),
        MaxLength = cl.Value("max-length") is null ? null : cl.Int("max-length", 0),
    };

    private static double Double(string value, string name) =>
        double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var d)
            ? d : throw new UsageException($"--{name} must be a number, got '{value}'");
}
