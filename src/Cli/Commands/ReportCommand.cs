using AttributionFleet.Cli.Report;

namespace AttributionFleet.Cli.Commands;

/// <summary>The typed values of <c>fleet report</c>.</summary>
public sealed record ReportOptions(string Results, string Html, string? Title, double RelativeDeltaThreshold)
{
    /// <summary>The fallback for lines without <c>over_threshold</c>: explain's own default.</summary>
    public const double DefaultRelativeDeltaThreshold = ExplainOptions.DefaultRelativeDeltaThreshold;
}

/// <summary><c>fleet report RESULTS.jsonl --html report.html</c>: one self-contained page for a whole job (<see cref="JobReport"/>).</summary>
public static class ReportCommand
{
    public const string Description =
        "Render the JSON lines of fleet explain --json or fleet submit --out (fleet results --out) as one self-contained HTML page: " +
        "label counts, a |delta| histogram, over-threshold, non-finite and weak-reference counts, faithfulness summaries, the words " +
        "that raise and lower each class most, and every text (searchable, sortable).";

    /// <summary>The command-line form (tests, scripts): parsed as <c>fleet report ARGS</c>, errors printed and mapped to exit codes.</summary>
    public static int Run(string[] args, TextWriter stdout) => Parsing.FleetCli.Run(["report", .. args], stdout, Console.Error, CancellationToken.None);

    /// <summary>Exit 0 with the page written; a missing or malformed results file, or an unwritable --html, is a usage error (2) and writes nothing.</summary>
    public static int Run(ReportOptions o, TextWriter stdout, CancellationToken cancel = default)
    {
        // The output is checked before the (possibly large) input is read: an unwritable --html fails at once.
        using var html = AtomicFile.Create(o.Html, "--html");
        List<ReportRow> rows;
        try { rows = JobResults.Read(o.Results); }
        catch (ResultsFormatException e) { throw new UsageException(e.Message); }
        cancel.ThrowIfCancellationRequested();
        var options = new JobReportOptions { Source = Path.GetFileName(o.Results), DeltaThreshold = o.RelativeDeltaThreshold };
        if (o.Title is not null) options = options with { Title = o.Title };
        var page = JobReport.Render(rows, options);
        html.Write(() => html.Writer.Write(page));
        html.Commit();
        int nonFinite = rows.Count(r => r.NonFinite);
        stdout.WriteLine($"wrote {Terminal.Escape(o.Html)} ({rows.Count} texts{(nonFinite > 0 ? $", {nonFinite} non-finite" : "")})");
        return 0;
    }
}
