using System.CommandLine;
using System.CommandLine.Parsing;
using System.Runtime.InteropServices;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Engine;
using AttributionFleet.Engine.Attribution;
using AttributionFleet.Worker.Client;

namespace AttributionFleet.Cli.Parsing;

/// <summary>
/// <c>fleet</c>'s command tree on System.CommandLine 2.0: typed options with validators, descriptions and defaults
/// (<see cref="FleetOptions"/>), --help on every command, --version, typo suggestions, the [suggest] directive behind
/// <c>fleet completions</c>, and no @file response files (a text that starts with "@" stays a text). Each command's
/// action binds the parse result to a typed options record and calls the command's Run with it; every expected
/// exception becomes one line on stderr and its exit code (<see cref="ExitCodes"/>), here and nowhere else.
/// </summary>
public static class FleetCli
{
    public const string ExitCodes =
        "Exit codes: 0 ok; 1 a job, model or text failed (a non_finite text included); 2 usage (bad option, input or output path); " +
        "3 broker unreachable, --timeout reached or stopped by SIGINT/SIGTERM (a submitted job stays recoverable with fleet results).";

    /// <summary>Commands whose parsing is their own (<c>Run(string[] args, TextWriter stdout)</c>): listed here, shown in help, args passed through.</summary>
    public static readonly List<(string Name, string Description, Func<string[], TextWriter, int> Run)> PassThrough = new()
    {
        ("train-head", "Train a linear head on the frozen MiniLM encoder.\n" + TrainHeadCommand.Usage, TrainHeadCommand.Run),
        ("train-default", "Fine-tune the default model (writes its delta).\n" + TrainDefaultCommand.Usage, TrainDefaultCommand.Run),
        ("bench", "Benchmarks (figures, not pass/fail).\n" + BenchCommand.Usage, BenchCommand.Run),
    };

    /// <summary>Commands that wait on the fleet and stop cleanly on their token; any other command ends at once on a signal.</summary>
    private static readonly HashSet<string> Waiting = new() { "submit", "results", "worker" };

    /// <summary>
    /// Parses and runs <paramref name="args"/>. For the waiting commands the first SIGINT/SIGTERM cancels the command's
    /// token (it stops waiting, the job stays recoverable, exit 3); a second one, or a signal to any other command,
    /// terminates the process as usual.
    /// </summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        using var signal = new CancellationTokenSource();
        bool waiting = args.Length > 0 && Waiting.Contains(args[0]);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        return Run(args, stdout, stderr, signal.Token);

        void Stop(PosixSignalContext context)
        {
            if (!waiting || signal.IsCancellationRequested) return;
            context.Cancel = true; // do not terminate the process: the command stops its wait and exits 3
            signal.Cancel();
        }
    }

    private static readonly AsyncLocal<TextWriter?> ErrorWriter = new();

    /// <summary>Where commands write progress and notes: the stderr of the running <see cref="Run(string[], TextWriter, TextWriter, CancellationToken)"/> (tests capture it).</summary>
    public static TextWriter Error => ErrorWriter.Value ?? Console.Error;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancel)
    {
        ErrorWriter.Value = stderr;
        var root = Build(stdout, cancel);
        var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        var invocation = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        string name = parse.CommandResult.Command == root ? "fleet" : "fleet " + parse.CommandResult.Command.Name;
        var unknown = UnknownOptions(parse);
        if (parse.Errors.Count > 0 || unknown.Count > 0)
        {
            foreach (var error in parse.Errors.Take(3)) stderr.WriteLine($"{name}: {Terminal.Escape(error.Message)}");
            foreach (var token in unknown.Take(3))
            {
                stderr.WriteLine($"{name}: unknown option '{Terminal.Escape(token)}' (a text that starts with '-' goes after --)");
                if (Typos.Suggest(parse.CommandResult.Command, token) is { } hint) stderr.WriteLine(hint);
            }
            foreach (var token in parse.UnmatchedTokens.Take(3))
                if (Typos.Suggest(parse.CommandResult.Command, token) is { } hint) stderr.WriteLine(hint);
            stderr.WriteLine($"see: {name} --help");
            return 2;
        }
        try
        {
            EngineRuntime.Configure();
            return parse.Invoke(invocation);
        }
        catch (Exception e)
        {
            var (code, message) = Describe(e, cancel);
            stderr.WriteLine($"{name}: {Terminal.Escape(message.ReplaceLineEndings(" "))}");
            if (code == 70 && Environment.GetEnvironmentVariable("FLEET_DEBUG") == "1") stderr.WriteLine(e);
            return code == 70 ? 1 : code;
        }
    }

    /// <summary>
    /// Words taken as texts that look like options (<c>--mdoel</c>, or <c>--html</c> where the command has none): the
    /// text argument accepts any word, so these are refused here unless they come after <c>--</c>.
    /// </summary>
    private static List<string> UnknownOptions(ParseResult parse)
    {
        var texts = parse.CommandResult.Command.Arguments.FirstOrDefault(a => a.Name == "text");
        if (texts is null || parse.GetResult(texts) is not { } result) return new List<string>();
        int doubleDash = parse.Tokens.ToList().FindIndex(t => t.Type == TokenType.DoubleDash);
        return result.Tokens
            .Where(t => t.Value.Length > 1 && t.Value[0] == '-' && !double.TryParse(t.Value, System.Globalization.CultureInfo.InvariantCulture, out _))
            .Where(t => doubleDash < 0 || parse.Tokens.ToList().FindIndex(x => ReferenceEquals(x, t)) is var i && (i < 0 || i < doubleDash))
            .Select(t => t.Value).ToList();
    }

    /// <summary>The one line and exit code of an exception; 70 marks an unexpected one (a bug; printed as exit 1).</summary>
    public static (int Code, string Message) Describe(Exception e, CancellationToken cancel)
    {
        if (e is AggregateException { InnerExceptions.Count: 1 } a) e = a.InnerExceptions[0];
        return e switch
        {
            UsageException u => (2, u.Message),
            AttributionRequestException r => (2, $"invalid {r.Field}: {r.Message}"),
            ModelLoadException m => (1, m.Message),
            EngineSettingException s => (2, s.Message),
            OutputFileException o => (1, o.Message),
            Report.ResultsFormatException f => (2, f.Message),
            FleetUnavailableException f => (3, f.Message),
            JobTooLargeException t => (1, t.Message),
            AttributionFleet.Worker.Hosting.FleetConfigurationException c => (2, c.Message),
            FleetStoppedException s => (3, s.Message),
            OperationCanceledException when cancel.IsCancellationRequested => (3, "stopped by a signal"),
            _ => (70, $"unexpected error (a bug, please report it with the command line; FLEET_DEBUG=1 prints the stack): {e.GetType().Name}: {e.Message}"),
        };
    }

    public static RootCommand Build(TextWriter stdout, CancellationToken cancel)
    {
        var o = new FleetOptions();
        var root = new RootCommand("fleet: explain text classifiers with exact DeepLift.\n" + ExitCodes);

        var predict = new Command("predict", PredictCommand.Description + "\n" + ExitCodes)
        {
            o.Texts, o.Input, o.Model, o.Device, o.Json, o.BatchSize, o.MaxLength,
        };
        predict.SetAction(p => PredictCommand.Run(new PredictOptions(
            p.GetValue(o.Model), p.GetValue(o.Device), p.GetValue(o.Json), p.GetValue(o.BatchSize), p.GetValue(o.MaxLength),
            p.GetValue(o.Input), p.GetValue(o.Texts) ?? Array.Empty<string>()), stdout, cancel));
        root.Subcommands.Add(predict);

        var explain = new Command("explain", ExplainCommand.Description + "\n" + ExitCodes)
        {
            o.Texts, o.Input, o.Model, o.Device, o.Method, o.Target, o.Output, o.SoftmaxRule, o.Precision, o.Steps, o.Integration,
            o.Samples, o.Reference, o.BatchSize, o.MaxLength, o.DeltaThreshold, o.RelativeDeltaThreshold, o.Faithfulness,
            o.WeakReferenceThreshold, o.Json, o.Html,
        };
        explain.SetAction(p => ExplainCommand.Run(new ExplainOptions(
            p.GetValue(o.Model), p.GetValue(o.Device), o.Flags(p), p.GetValue(o.DeltaThreshold), p.GetValue(o.RelativeDeltaThreshold),
            p.GetValue(o.Json), p.GetValue(o.Html), p.GetValue(o.Input), p.GetValue(o.Texts) ?? Array.Empty<string>()), stdout, cancel));
        root.Subcommands.Add(explain);

        // submit takes explain's flags except --device (the workers' Worker:Device decides), --json (its output is
        // always JSON lines) and --html (no report from a job): System.CommandLine refuses them as unknown.
        var submit = new Command("submit", SubmitCommand.Description + "\n" + ExitCodes)
        {
            o.Texts, o.Input, o.Model, o.Method, o.Target, o.Output, o.SoftmaxRule, o.Precision, o.Steps, o.Integration, o.Samples,
            o.Reference, o.BatchSize, o.MaxLength, o.DeltaThreshold, o.RelativeDeltaThreshold, o.Faithfulness, o.WeakReferenceThreshold,
            o.TextsPerBatch, o.Out, o.NoWait,
            o.Timeout, o.ConnectTimeout, o.Verbose, o.JobId, o.Transport, o.RabbitMq, o.Store, o.Api, o.Config, o.ModelPath,
        };
        submit.SetAction(p => SubmitCommand.Run(new SubmitOptions(
            p.GetValue(o.Model), o.Flags(p), p.GetValue(o.DeltaThreshold), p.GetValue(o.RelativeDeltaThreshold), p.GetValue(o.TextsPerBatch),
            p.GetValue(o.Out), p.GetValue(o.NoWait), Seconds(p.GetValue(o.Timeout)), p.GetValue(o.Verbose), p.GetValue(o.JobId),
            p.GetValue(o.Input), p.GetValue(o.Texts) ?? Array.Empty<string>(), o.Connection(p)), stdout, cancel));
        root.Subcommands.Add(submit);

        var jobId = new Argument<Guid>("job-id") { Description = "The job id fleet submit --no-wait printed (a GUID)." };
        var results = new Command("results", ResultsCommand.Description + "\n" + ExitCodes)
        {
            jobId, o.Out, o.Timeout, o.Delete, o.Store, o.Api, o.Transport, o.RabbitMq, o.Config,
        };
        results.SetAction(p => ResultsCommand.Run(new ResultsOptions(p.GetValue(jobId), p.GetValue(o.Out), Seconds(p.GetValue(o.Timeout)), p.GetValue(o.Delete), o.Connection(p)), stdout, cancel));
        root.Subcommands.Add(results);

        var worker = new Command("worker", WorkerCommand.Description + "\n" + ExitCodes)
        {
            o.Transport, o.RabbitMq, o.Store, o.Config, o.Model, o.ModelPath, o.ConnectTimeout, o.HealthPort, o.Concurrency, o.Device,
        };
        worker.SetAction(p => WorkerCommand.Run(new WorkerRunOptions(p.GetValue(o.HealthPort), p.GetValue(o.Concurrency), p.GetValue(o.Device), o.Connection(p)), stdout, cancel));
        root.Subcommands.Add(worker);

        var report = new Command("report", ReportCommand.Description + "\n" + ExitCodes)
        {
            o.Results, o.ReportHtml, o.Title, o.ReportRelativeDeltaThreshold,
        };
        report.SetAction(p => ReportCommand.Run(new ReportOptions(
            p.GetValue(o.Results)!, p.GetValue(o.ReportHtml)!, p.GetValue(o.Title), p.GetValue(o.ReportRelativeDeltaThreshold)), stdout, cancel));
        root.Subcommands.Add(report);

        var onnx = new Argument<string>("MODEL.onnx") { Description = "The ONNX encoder (BERT family, opset 13)." };
        var vocab = new Argument<string>("VOCAB.txt") { Description = "Its WordPiece vocabulary." };
        var outDir = new Argument<string>("OUTDIR") { Description = "Folder to write (config.json, model.safetensors, vocab.txt)." };
        var import = new Command("import-onnx", ImportOnnxCommand.Description + "\n" + ExitCodes) { onnx, vocab, outDir };
        import.SetAction(p => ImportOnnxCommand.Run(new ImportOnnxOptions(p.GetValue(onnx)!, p.GetValue(vocab)!, p.GetValue(outDir)!), stdout));
        root.Subcommands.Add(import);

        var shell = new Argument<string>("shell") { Description = "bash or zsh." };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        var completions = new Command("completions", "Print a shell completion script: eval \"$(fleet completions bash)\" (uses fleet's [suggest] directive).\n" + ExitCodes) { shell };
        completions.SetAction(p =>
        {
            stdout.Write(Completions.Script(p.GetValue(shell)!));
            return 0;
        });
        root.Subcommands.Add(completions);

        foreach (var (name, description, run) in PassThrough)
        {
            var command = new Command(name, description + "\n" + ExitCodes) { TreatUnmatchedTokensAsErrors = false };
            command.SetAction(p => run(p.UnmatchedTokens.ToArray(), stdout));
            root.Subcommands.Add(command);
        }
        return root;
    }

    private static TimeSpan? Seconds(double? s) => s is { } v ? TimeSpan.FromSeconds(v) : null;
}

/// <summary>Shell completion scripts that ask <c>fleet [suggest:POSITION] "LINE"</c> for the words that fit.</summary>
public static class Completions
{
    public static string Script(string shell) => shell switch
    {
        "bash" => """
            _fleet_complete() {
              local IFS=$'\n'
              COMPREPLY=( $(compgen -W "$(fleet "[suggest:${COMP_POINT}]" "${COMP_LINE}" 2>/dev/null)" -- "${COMP_WORDS[COMP_CWORD]}") )
            }
            complete -o default -F _fleet_complete fleet

            """,
        _ => """
            #compdef fleet
            _fleet() {
              local -a words_
              words_=("${(@f)$(fleet "[suggest:${#BUFFER}]" "$BUFFER" 2>/dev/null)}")
              compadd -a words_
            }
            compdef _fleet fleet

            """,
    };
}

/// <summary>"Did you mean" for the tokens a parse did not match: the command's options and subcommands within two edits.</summary>
public static class Typos
{
    public static string? Suggest(Command command, string token)
    {
        var names = command.Options.Select(o => o.Name).Concat(command.Options.SelectMany(o => o.Aliases))
            .Concat(command.Subcommands.Select(c => c.Name)).Distinct();
        var close = names.Select(n => (Name: n, Distance: Distance(token, n))).Where(x => x.Distance <= 2 && x.Distance < token.Length)
            .OrderBy(x => x.Distance).Take(3).Select(x => x.Name).ToList();
        return close.Count > 0 ? $"'{Terminal.Escape(token)}': did you mean {string.Join(" or ", close)}?" : null;
    }

    /// <summary>Levenshtein distance.</summary>
    public static int Distance(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int previous = d[0];
            d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int current = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), previous + (a[i - 1] == b[j - 1] ? 0 : 1));
                previous = current;
            }
        }
        return d[b.Length];
    }
}
