using AttributionFleet.Cli.Parsing;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Models;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet submit</c>.</summary>
public sealed record SubmitOptions(
    string? Model, ExplainFlags Flags, double? DeltaThreshold, double? RelativeDeltaThreshold, int? TextsPerBatch, string? Out,
    bool NoWait, TimeSpan? Timeout, bool Verbose, Guid? JobId, string? Input, IReadOnlyList<string> Texts, FleetConnection Fleet)
{
    public string ModelId => Model ?? DefaultModel.Id;
}

/// <summary><c>fleet submit --input FILE [explain flags] [--out FILE] [--no-wait]</c>: a job through the fleet.</summary>
public static class SubmitCommand
{
    /// <summary>The command-line form (tests, scripts): parsed as <c>fleet submit ARGS</c>, errors printed and mapped to exit codes.</summary>
    public static int Run(string[] args, TextWriter stdout) => Parsing.FleetCli.Run(["submit", .. args], stdout, Console.Error, CancellationToken.None);

    public const string Description =
        "Explain texts as a job through the fleet (--transport inmemory runs a worker in this process: no broker needed); " +
        "writes one JSON line per text (the fields of explain --json plus id) to --out or stdout. The workers keep the results in the job store: " +
        "read them again with fleet results JOB_ID.";

    public static int Run(SubmitOptions o, TextWriter stdout, CancellationToken cancel = default)
    {
        using var run = RunScope.Start(o.Timeout, cancel);
        var texts = TextInput.Read(o.Texts, o.Input);
        var job = new SubmitAttributionJob
        {
            JobId = o.JobId ?? Guid.NewGuid(),
            ModelId = o.ModelId,
            Texts = texts.Select(t => new JobText { Id = t.Id, Text = t.Text }).ToList(),
            Options = o.Flags.ToMessage(),
            DeltaThreshold = o.DeltaThreshold,
            RelativeDeltaThreshold = o.RelativeDeltaThreshold,
            TextsPerBatch = o.TextsPerBatch,
            SubmittedAt = DateTimeOffset.UtcNow,
        };
        using var output = o.Out is null ? null : AtomicFile.Create(o.Out, "--out");
        using var host = FleetHost.Build(o.Fleet, consumeJobs: null, o.Verbose ? LogLevel.Information : LogLevel.Warning);
        if (o.NoWait && !FleetHost.UsesRabbitMq(host))
            throw new UsageException("--no-wait needs a broker (--transport rabbitmq): an in-memory job lives only as long as this process");
        try
        {
            return Run(host, job, o, output, stdout, run).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (run.Token.IsCancellationRequested)
        {
            throw new FleetStoppedException($"stopped ({run.Reason}) before job {job.JobId} was collected" +
                (o.NoWait ? "" : $"; if it was submitted, its results go to the job store: fleet results {job.JobId} --out FILE"));
        }
    }

    private static async Task<int> Run(IHost host, SubmitAttributionJob job, SubmitOptions o, AtomicFile? output, TextWriter stdout, RunScope run)
    {
        // A job over Limits:MaxMessageBytes is refused before anything connects, starts or is sent (JobTooLargeException: exit 1).
        host.Services.GetRequiredService<FleetClient>().CheckSize(job);
        await FleetHost.EnsureBrokerReachable(host, o.Fleet.ConnectTimeout, run.Token).ConfigureAwait(false);
        await host.StartAsync(run.Token);
        try
        {
            var client = host.Services.GetRequiredService<FleetClient>();
            if (o.NoWait)
            {
                await client.Submit(job, run.Token);
                stdout.WriteLine(job.JobId);
                Parsing.FleetCli.Error.WriteLine($"submitted job {job.JobId} ({job.Texts.Count} texts); collect it with: fleet results {job.JobId} --out results.jsonl");
                return 0;
            }
            return await ResultsCommand.Collect(client, job.JobId, output, stdout, () => client.Submit(job, run.Token), job.Texts, run);
        }
        finally
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await host.StopAsync(stop.Token);
        }
    }
}

/// <summary>
/// The cancellation of one run: SIGINT/SIGTERM (the token the CLI passes in) or --timeout, whichever comes first, and
/// which of the two it was (for the message).
/// </summary>
public sealed class RunScope : IDisposable
{
    private readonly CancellationTokenSource _cts;

    public TimeSpan? Timeout { get; }
    public CancellationToken Token => _cts.Token;
    public CancellationToken Signal { get; }

    private RunScope(TimeSpan? timeout, CancellationToken signal)
    {
        Timeout = timeout;
        Signal = signal;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(signal);
        if (timeout is { } t) _cts.CancelAfter(t);
    }

    public static RunScope Start(TimeSpan? timeout, CancellationToken signal) => new(timeout, signal);

    public string Reason => Signal.IsCancellationRequested ? "stopped by a signal" : $"--timeout {Timeout?.TotalSeconds:0.#} s reached";

    public void Dispose() => _cts.Dispose();
}
