using AttributionFleet.Worker.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet results JOB_ID [--out FILE] [--delete]</c>: a job's results from the job store (waiting while it runs), as often as
/// wanted; <c>--delete</c> removes the job and its results from the store.
/// </summary>
public static class ResultsCommand
{
    public const string Usage = "fleet results JOB_ID [--out results.jsonl] [--timeout SECONDS] [--delete] " + FleetHost.OptionsUsage;

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, FleetHost.ValueOptions.Concat(new[] { "out", "timeout", "model" }).ToArray(), new[] { "delete" });
        if (cl.Positionals.Count != 1 || !Guid.TryParse(cl.Positionals[0], out var jobId)) throw new UsageException("give one job id (a GUID)");
        using var host = FleetHost.Build(cl, consumeJobs: false, LogLevel.Warning);
        try
        {
            return Run().GetAwaiter().GetResult();
        }
        catch (FleetUnavailableException e)
        {
            // One line naming the host and the cause (#15's top-level handler maps this the same way).
            Console.Error.WriteLine($"fleet results: {e.Message}");
            return 3;
        }

        // Reading needs the store (or the job API), not the broker: the host is not started.
        async Task<int> Run()
        {
            var client = host.Services.GetRequiredService<FleetClient>();
            if (cl.Flag("delete"))
            {
                bool deleted = await client.Delete(jobId);
                Console.Error.WriteLine(deleted ? $"job {jobId} deleted" : $"job {jobId} is not in the job store");
                return deleted ? 0 : 1;
            }
            if (await client.Status(jobId) is null)
            {
                Console.Error.WriteLine($"job {jobId} is not in the job store ({client.Source}): " +
                    "not taken by a worker yet, never submitted, or deleted");
                return 1;
            }
            return await Collect(client, jobId, cl, stdout, null);
        }
    }

    /// <summary>
    /// Collects the job (submitting it first when <paramref name="submit"/> is given), writes one JSON line per text to
    /// --out or stdout as batches arrive, shows progress on stderr; 0 when the job completed, 1 when it failed.
    /// </summary>
    public static async Task<int> Collect(FleetClient client, Guid jobId, CommandLine cl, TextWriter stdout, Func<Task>? submit)
    {
        using var cancel = new CancellationTokenSource();
        if (cl.Value("timeout") is not null) cancel.CancelAfter(TimeSpan.FromSeconds(cl.Int("timeout", 0)));
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        // SIGTERM (timeout, kill, a supervisor) stops waiting like Ctrl+C does; the job goes on in the fleet.
        using var onTerm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c =>
        {
            c.Cancel = true;
            cancel.Cancel();
        });
        var outPath = cl.Value("out");
        var writer = outPath is null ? stdout : new StreamWriter(outPath, append: false);
        bool bar = !Console.IsErrorRedirected;
        try
        {
            var collecting = client.Collect(jobId, async batch =>
            {
                foreach (var r in batch.Results) await writer.WriteLineAsync(Output.Line(Output.AttributionJson(r)));
                await writer.FlushAsync();
            }, p => { if (bar) Console.Error.Write("\r" + ProgressBar(p)); }, cancel.Token);
            if (submit is not null) await submit();
            var outcome = await collecting;
            if (bar) Console.Error.WriteLine();
            if (outcome.Failed is { } f)
            {
                Console.Error.WriteLine($"job {jobId} failed: {f.ReasonCode}{(f.Field is null ? "" : $" ({f.Field})")}: {f.Message}");
                return 1;
            }
            var c = outcome.Completed!;
            Console.Error.WriteLine($"job {jobId} completed: {c.TextCount} texts in {c.BatchCount} batches, {c.WallMilliseconds / 1000:0.00} s; " +
                $"|delta| max {c.Delta.Max:E2} mean {c.Delta.Mean:E2} p95 {c.Delta.P95:E2}" +
                (c.Delta.Threshold is { } t ? $", {c.Delta.OverThreshold} over {t:G3}" : ""));
            return 0;
        }
        catch (OperationCanceledException)
        {
            if (bar) Console.Error.WriteLine();
            Console.Error.WriteLine($"stopped waiting for job {jobId}; the fleet goes on with it, read it later: fleet results {jobId} --out FILE");
            return 3;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            if (outPath is not null) await writer.DisposeAsync();
        }
    }

    public static string ProgressBar(JobProgress p, int width = 30)
    {
        double f = p.TextCount > 0 ? Math.Clamp((double)p.TextsDone / p.TextCount, 0, 1) : 0;
        int filled = (int)Math.Round(f * width);
        return $"[{new string('#', filled)}{new string('.', width - filled)}] {p.TextsDone}/{Math.Max(p.TextCount, 0)} texts, {p.BatchesDone}/{Math.Max(p.BatchCount, 0)} batches";
    }
}
