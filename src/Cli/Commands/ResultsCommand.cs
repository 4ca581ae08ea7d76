using AttributionFleet.Cli.Parsing;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet results</c>.</summary>
public sealed record ResultsOptions(Guid JobId, string? Out, TimeSpan? Timeout, bool Delete, FleetConnection Fleet);

/// <summary>
/// <c>fleet results JOB_ID [--out FILE] [--delete]</c>: a job's results from the job store (waiting while it runs), as often as
/// wanted; <c>--delete</c> removes the job and its results from the store. Reads the store (<c>--store</c>) or a worker's job
/// API (<c>--api</c>), never the broker.
/// </summary>
public static class ResultsCommand
{
    /// <summary>The command-line form (tests, scripts): parsed as <c>fleet results ARGS</c>, errors printed and mapped to exit codes.</summary>
    public static int Run(string[] args, TextWriter stdout) => Parsing.FleetCli.Run(["results", .. args], stdout, Console.Error, CancellationToken.None);

    public const string Description =
        "Read a job's results from the job store (waiting while it runs), as often as wanted; --delete removes the job and its results. " +
        "Reads the store (--store, Store:ConnectionString) or a worker's job API (--api), not the broker.";

    public static int Run(ResultsOptions o, TextWriter stdout, CancellationToken cancel = default)
    {
        if (o.Delete && o.Out is not null) throw new UsageException("--out is not used with --delete (it deletes the job and writes nothing)");
        if (o.Delete && o.Timeout is not null) throw new UsageException("--timeout is not used with --delete (it does not wait)");
        using var run = RunScope.Start(o.Timeout, cancel);
        using var output = o.Out is null ? null : AtomicFile.Create(o.Out, "--out");
        using var host = FleetHost.Build(o.Fleet, consumeJobs: false, LogLevel.Warning);
        var store = host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<AttributionFleet.Worker.Store.StoreOptions>>().Value;
        if (!FleetHost.UsesRabbitMq(host) && string.IsNullOrWhiteSpace(store.ConnectionString) && string.IsNullOrWhiteSpace(store.Api))
            throw new UsageException("fleet results reads the job store: give --store CONNECTION_STRING or --api URL " +
                "(with the in-memory transport and no store configured, a job's store is a temporary file that ends with its process)");
        try
        {
            return Run().GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (run.Token.IsCancellationRequested)
        {
            throw new FleetStoppedException($"stopped ({run.Reason}) before job {o.JobId} was collected; it stays in the job store: fleet results {o.JobId} --out FILE");
        }

        // Reading needs the store (or the job API), not the broker: the host is not started.
        async Task<int> Run()
        {
            var client = host.Services.GetRequiredService<FleetClient>();
            if (o.Delete)
            {
                bool deleted = await client.Delete(o.JobId, run.Token);
                Parsing.FleetCli.Error.WriteLine(deleted ? $"job {o.JobId} deleted" : $"job {o.JobId} is not in the job store ({client.Source})");
                return deleted ? 0 : 1;
            }
            if (await client.Status(o.JobId, run.Token) is null)
            {
                Parsing.FleetCli.Error.WriteLine($"job {o.JobId} is not in the job store ({client.Source}): " +
                    "not taken by a worker yet, never submitted, or deleted");
                return 1;
            }
            return await Collect(client, o.JobId, output, stdout, null, null, run);
        }
    }

    /// <summary>
    /// Collects the job (submitting it first when <paramref name="submit"/> is given), writes one JSON line per text to
    /// <paramref name="output"/> (committed only when the job completed) or stdout as batches arrive, shows progress on
    /// stderr. 0 when the job completed and every text is finite, 1 when it failed or a text is non_finite, 3 when the
    /// run was stopped (signal or --timeout): the job stays recoverable with <c>fleet results</c>.
    /// </summary>
    public static async Task<int> Collect(FleetClient client, Guid jobId, AtomicFile? output, TextWriter stdout, Func<Task>? submit,
        IReadOnlyList<JobText>? texts, RunScope run)
    {
        var writer = output?.Writer ?? stdout;
        bool bar = !Console.IsErrorRedirected;
        int written = 0, nonFinite = 0;
        try
        {
            var collecting = client.Collect(jobId, async batch =>
            {
                foreach (var r in batch.Results)
                {
                    var json = Output.AttributionJson(r);
                    if (!IsFinite(r)) nonFinite++;
                    if (output is null) await writer.WriteLineAsync(Output.Line(json));
                    else await output.WriteAsync(() => writer.WriteLineAsync(Output.Line(json)));
                    written++;
                }
                if (output is null) await writer.FlushAsync();
                else await output.WriteAsync(() => writer.FlushAsync());
            }, p => { if (bar) Parsing.FleetCli.Error.Write("\r" + ProgressBar(p)); }, run.Token);
            if (submit is not null) await submit();
            var outcome = await collecting;
            if (bar) Parsing.FleetCli.Error.WriteLine();
            if (outcome.Failed is { } f)
            {
                Parsing.FleetCli.Error.WriteLine($"job {jobId} failed: {f.ReasonCode}{(f.Field is null ? "" : $" ({Where(f.Field, texts)})")}: {Terminal.Escape(f.Message)}");
                return 1;
            }
            output?.Commit();
            var c = outcome.Completed!;
            Parsing.FleetCli.Error.WriteLine($"job {jobId} completed: {c.TextCount} texts in {c.BatchCount} batches, {c.WallMilliseconds / 1000:0.00} s; " +
                $"|delta| max {c.Delta.Max:E2} mean {c.Delta.Mean:E2} p95 {c.Delta.P95:E2}" +
                (c.Delta.Threshold is { } t ? $", {c.Delta.OverThreshold} over {t:G3}" : "") +
                (nonFinite > 0 ? $"; {nonFinite} texts non_finite (NaN or infinite values)" : ""));
            return nonFinite > 0 ? 1 : 0;
        }
        catch (OperationCanceledException) when (run.Token.IsCancellationRequested)
        {
            if (bar) Parsing.FleetCli.Error.WriteLine();
            string kept = "";
            if (output is not null && written > 0)
            {
                // Keep what was collected beside the target, never over it (the store still has every result).
                var partial = output.Path + ".partial";
                output.Commit(partial);
                kept = $"; the {written} results collected so far are in {partial}";
            }
            throw new FleetStoppedException($"stopped waiting for job {jobId} ({run.Reason}){kept}; a broker's workers go on with it and keep its results in the job store: fleet results {jobId} --out FILE");
        }
    }

    private static bool IsFinite(TextAttribution r) =>
        r.Status == Engine.Text.NonFinite.Status.Ok && r.Scores.All(double.IsFinite) && double.IsFinite(r.Fx) && double.IsFinite(r.Fx0) && double.IsFinite(r.Delta);

    /// <summary>A failure's field with the text's client id and line when it names one text (<c>texts[3]</c>).</summary>
    private static string Where(string field, IReadOnlyList<JobText>? texts) =>
        ExplainCommand.TextIndex(field) is int i && texts is not null && i < texts.Count ? $"{field}, text id {texts[i].Id}" : field;

    public static string ProgressBar(JobProgress p, int width = 30)
    {
        double f = p.TextCount > 0 ? Math.Clamp((double)p.TextsDone / p.TextCount, 0, 1) : 0;
        int filled = (int)Math.Round(f * width);
        return $"[{new string('#', filled)}{new string('.', width - filled)}] {p.TextsDone}/{Math.Max(p.TextCount, 0)} texts, {p.BatchesDone}/{Math.Max(p.BatchCount, 0)} batches";
    }
}

/// <summary>A wait stopped by SIGINT/SIGTERM or --timeout: one line, exit 3; the job stays recoverable.</summary>
public sealed class FleetStoppedException(string message) : Exception(message);
