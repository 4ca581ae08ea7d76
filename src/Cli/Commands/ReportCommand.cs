using System.Globalization;
using AttributionFleet.Cli.Report;

namespace AttributionFleet.Cli.Commands;

/// <summary><c>fleet report results.jsonl --html report.html</c>: one self-contained page for a whole job (<see cref="JobReport"/>).</summary>
public static class ReportCommand
{
    public const string Usage =
        "fleet report RESULTS.jsonl --html report.html [--title TEXT] [--delta-threshold X (default 1e-4, for lines without over_threshold)]";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "html", "title", "delta-threshold" }, Array.Empty<string>());
        if (cl.Positionals.Count != 1) throw new UsageException("give exactly one results file (the JSON lines of fleet explain --json or fleet submit --out)");
        var html = cl.Required("html");
        var options = new JobReportOptions { Source = Path.GetFileName(cl.Positionals[0]) };
        if (cl.Value("title") is { } title) options = options with { Title = title };
        if (cl.Value("delta-threshold") is { } v)
            options = options with
            {
                DeltaThreshold = double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d >= 0
                    ? d
                    : throw new UsageException($"--delta-threshold must be a non-negative number, got '{v}'"),
            };
        List<ReportRow> rows;
        try { rows = JobResults.Read(cl.Positionals[0]); }
        catch (ResultsFormatException e) { throw new UsageException(e.Message); }
        JobReport.Write(html, rows, options);
        stdout.WriteLine($"wrote {html} ({rows.Count} texts)");
        return 0;
    }
}
