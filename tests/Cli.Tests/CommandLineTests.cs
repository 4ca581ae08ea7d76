using System.Diagnostics;
using System.Text;
using System.Text.Json;
using AttributionFleet.Cli.Parsing;
using AttributionFleet.Cli.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace AttributionFleet.Cli.Tests;

/// <summary>
/// The CLI as a user meets it with bad input (issue #15): every case is one line on stderr with its exit code, no stack
/// trace, and an existing output file left exactly as it was. Runs in process through <see cref="FleetCli.Run(string[], TextWriter, TextWriter, CancellationToken)"/>,
/// on the tiny BERT of tests/fixtures/reference (and a copy of it with NaN weights).
/// </summary>
public sealed class CommandLineTests(ITestOutputHelper log) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fleet-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Existing = "previous results, must survive a failed run\n";

    /// <summary>(arguments, exit code, a piece of the message). {dir} is a temp folder with in.txt, existing.jsonl and bad inputs; {tiny} the tiny model.</summary>
    public static TheoryData<string, int, string> BadInputs() => new()
    {
        { "explain --device tpu hi", 2, "--device 'tpu': expected cpu, cuda or cuda:N" },
        { "explain --model {tiny} --html {dir}/missing/report.html hi", 2, "directory" },
        { "explain --model {tiny} --html {readonly}/report.html hi", 2, "cannot write here" },
        { "explain --model {tiny} --html /dev/full hi", 1, "write failed" },
        { "explain --model {tiny} --html {dir} hi", 2, "is a directory" },
        { "submit --rabbitmq not-a-url --input {dir}/in.txt --out {dir}/existing.jsonl", 2, "--rabbitmq 'not-a-url': expected a URL" },
        { "submit --rabbitmq amqp://guest:secret@127.0.0.1:1/ --connect-timeout 2 --input {dir}/in.txt --out {dir}/existing.jsonl", 3, "cannot reach the broker 127.0.0.1:1" },
        { "submit --transport inmemory --input {dir}/in.txt --out {dir}/missing/out.jsonl", 2, "does not exist" },
        { "submit --html {dir}/r.html --input {dir}/in.txt --out {dir}/existing.jsonl", 2, "unknown option '--html'" },
        { "submit --device cpu --input {dir}/in.txt --out {dir}/existing.jsonl", 2, "unknown option '--device'" },
        { "submit --json --input {dir}/in.txt --out {dir}/existing.jsonl", 2, "unknown option '--json'" },
        { "submit --transport carrier-pigeon --input {dir}/in.txt", 2, "carrier-pigeon" },
        { "submit --timeout -5 --input {dir}/in.txt", 2, "--timeout must be a positive number of seconds" },
        { "explain --model {tiny} --input {dir}/binary.txt", 2, "binary input refused (NUL byte at byte offset 5)" },
        { "explain --model {tiny} --input {dir}/latin1.txt", 2, "binary input refused (invalid UTF-8 at byte offset 9)" },
        { "explain --model {tiny} --input {dir}/nul.jsonl", 2, "nul.jsonl:2: the text is empty" },
        { "explain --model {tiny} --input {dir}/gaps.jsonl", 2, "gaps.jsonl:5: invalid JSON" },
        { "explain --model {tiny} --input {dir}/missing.txt", 2, "file not found" },
        { "explain --model {tiny} --precision float16 hi", 2, "float16 needs a CUDA device" },
        { "explain --model {tiny} --steps 0 hi", 2, "--steps must be between 1 and 10000" },
        { "explain --model {tiny} --method magic hi", 2, "magic" },
        { "explain --model {tiny} --target nine hi", 2, "invalid target" },
        { "explain --model {dir}/no-model hi", 1, "" },
        { "explain --mdoel {tiny} hi", 2, "did you mean --model" },
        { "explian hi", 2, "did you mean explain" },
        { "results not-a-guid --rabbitmq amqp://localhost/", 2, "not-a-guid" },
        // results reads the job store (or a worker's job API), never the broker
        { "results 00000000-0000-0000-0000-0000000000aa --store Filename={dir}/jobs.db --out {dir}/existing.jsonl", 1, "job 00000000-0000-0000-0000-0000000000aa is not in the job store" },
        { "results 00000000-0000-0000-0000-0000000000aa --store Filename={dir}/jobs.db --delete", 1, "is not in the job store" },
        { "results 00000000-0000-0000-0000-0000000000aa --store Filename={dir}/jobs.db --delete --out {dir}/existing.jsonl", 2, "--out is not used with --delete" },
        { "results 00000000-0000-0000-0000-0000000000aa --transport inmemory --out {dir}/existing.jsonl", 2, "give --store CONNECTION_STRING or --api URL" },
        { "results 00000000-0000-0000-0000-0000000000aa --api ftp://worker/ --out {dir}/existing.jsonl", 2, "--api 'ftp://worker/': expected a URL like http://worker:8080" },
        { "results 00000000-0000-0000-0000-0000000000aa --connect-timeout 2 --store Filename={dir}/jobs.db", 2, "--connect-timeout" },
        { "submit --transport inmemory --config {dir}/small-limit.json --input {dir}/in.txt --out {dir}/existing.jsonl", 1, "the limit Limits:MaxMessageBytes is 100" },
        { "submit --rabbitmq amqp://127.0.0.1:1/ --input {dir}/in.txt --out {dir}/existing.jsonl", 2, "RabbitMq:Username is not set" },
        { "explain --model {tiny}", 2, "no texts" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void BadInputIsOneLineWithItsExitCodeAndLeavesOutputUntouched(string command, int code, string message)
    {
        Prepare();
        var args = Args(command);
        var watch = Stopwatch.StartNew();
        var (exit, stdout, stderr) = Run(args);
        log.WriteLine($"{command}\nexit {exit} in {watch.Elapsed.TotalSeconds:0.0} s\nstderr: {stderr}");
        Assert.Equal(code, exit);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("   at ", stderr);            // no stack frame
        Assert.DoesNotContain("unexpected error", stderr);   // not a bug caught by the last resort
        Assert.Equal(Existing, File.ReadAllText(Path.Combine(_dir, "existing.jsonl")));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp*", SearchOption.AllDirectories));
        Assert.False(File.Exists(Path.Combine(_dir, "r.html")));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"took {watch.Elapsed}");
        if (exit == 2) Assert.DoesNotContain("{\"id\"", stdout);
    }

    [Fact]
    public void AnUnreachableBrokerFailsWithinTheConnectTimeout()
    {
        Prepare();
        var watch = Stopwatch.StartNew();
        // 10.255.255.1 is not routed (connects hang rather than being refused): only the connect timeout ends the wait.
        var (exit, _, stderr) = Run(Args("submit --rabbitmq amqp://guest:guest@10.255.255.1:5672/ --connect-timeout 3 --input {dir}/in.txt --out {dir}/existing.jsonl"));
        var elapsed = watch.Elapsed;
        log.WriteLine($"exit {exit} after {elapsed.TotalSeconds:0.00} s: {stderr}");
        Assert.Equal(3, exit);
        Assert.Contains("cannot reach the broker 10.255.255.1:5672", stderr);
        Assert.Contains("--connect-timeout 3 s", stderr);
        Assert.True(elapsed < TimeSpan.FromSeconds(3 + 7), $"took {elapsed.TotalSeconds:0.0} s for a 3 s connect timeout");
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.Equal(Existing, File.ReadAllText(Path.Combine(_dir, "existing.jsonl")));
    }

    [Fact]
    public async Task SigtermStopsTheWaitWithExitThree()
    {
        Prepare();
        var fleet = Path.Combine(AppContext.BaseDirectory, "fleet");
        var start = new ProcessStartInfo(fleet)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            ArgumentList = { "submit", "--rabbitmq", "amqp://guest:guest@10.255.255.1:5672/", "--connect-timeout", "120",
                "--input", Path.Combine(_dir, "in.txt"), "--out", Path.Combine(_dir, "existing.jsonl") },
        };
        start.Environment["ATTRIBUTIONFLEET_CACHE"] = TestEnvironment.Init();
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        await Task.Delay(TimeSpan.FromSeconds(4)); // started and waiting for the broker
        Assert.False(process.HasExited, "exited before the signal");
        var watch = Stopwatch.StartNew();
        using (var kill = Process.Start("kill", new[] { "-TERM", process.Id.ToString() })) kill.WaitForExit();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await process.WaitForExitAsync(limit.Token); // throws if SIGTERM did not stop fleet submit within 15 s
        var err = await stderr;
        log.WriteLine($"exit {process.ExitCode} {watch.Elapsed.TotalSeconds:0.0} s after SIGTERM: {err}");
        Assert.Equal(3, process.ExitCode);
        Assert.Contains("stopped by a signal", err);
        Assert.Equal(Existing, File.ReadAllText(Path.Combine(_dir, "existing.jsonl")));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    [RabbitMqFact]
    public async Task StoppingAWaitingSubmitLeavesTheJobQueuedAndOutputUntouched()
    {
        Prepare();
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var config = Path.Combine(_dir, "fleet.json");
        File.WriteAllText(config, JsonSerializer.Serialize(new { Worker = new { JobQueue = $"cli-test-nobody-{suffix}", BatchQueue = $"cli-test-nobody-batches-{suffix}" } }));
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var jobId = Guid.NewGuid();
        int exit = FleetCli.Run(new[] { "submit", "--rabbitmq", Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")!, "--config", config,
            "--job-id", jobId.ToString(), "--input", Path.Combine(_dir, "in.txt"), "--out", Path.Combine(_dir, "existing.jsonl") }, stdout, stderr, cancel.Token);
        log.WriteLine(stderr.ToString());
        Assert.Equal(3, exit);
        Assert.Contains($"stopped waiting for job {jobId} (stopped by a signal)", stderr.ToString());
        Assert.Contains($"fleet results {jobId}", stderr.ToString());
        Assert.Equal(Existing, File.ReadAllText(Path.Combine(_dir, "existing.jsonl")));
        Assert.False(File.Exists(Path.Combine(_dir, "existing.jsonl.partial")));
        await DeleteQueues($"cli-test-nobody-{suffix}", $"cli-test-nobody-batches-{suffix}");
    }

    /// <summary>The shared broker keeps no queue of ours after a test.</summary>
    private static async Task DeleteQueues(params string[] names)
    {
        var factory = new RabbitMQ.Client.ConnectionFactory { Uri = new Uri(Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")!) };
        await using var connection = await factory.CreateConnectionAsync();
        foreach (var name in names)
        {
            await using var channel = await connection.CreateChannelAsync();
            await channel.QueueDeleteAsync(name, ifUnused: false, ifEmpty: false);
        }
    }

    [RabbitMqFact]
    public void WrongBrokerCredentialsAreOneLineAndExitThreeAtOnce()
    {
        Prepare();
        var url = new UriBuilder(Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")!) { UserName = "guest", Password = "not-the-password" };
        var watch = Stopwatch.StartNew();
        var (exit, _, stderr) = Run(new[] { "submit", "--rabbitmq", url.Uri.ToString(), "--input", Path.Combine(_dir, "in.txt"), "--out", Path.Combine(_dir, "existing.jsonl") });
        log.WriteLine($"exit {exit} after {watch.Elapsed.TotalSeconds:0.0} s: {stderr}");
        Assert.Equal(3, exit);
        Assert.Contains("refused user 'guest' (wrong user name or password)", stderr);
        Assert.DoesNotContain("not-the-password", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), "wrong credentials are not retried until the connect timeout");
        Assert.Equal(Existing, File.ReadAllText(Path.Combine(_dir, "existing.jsonl")));
    }

    [Fact]
    public void HelpOnEveryCommandDocumentsTheExitCodes()
    {
        foreach (var command in new[] { "", "predict", "explain", "submit", "results", "worker", "import-onnx", "completions", "bench", "train-head", "train-default" })
        {
            var (exit, stdout, _) = Run((command + " --help").Split(' ', StringSplitOptions.RemoveEmptyEntries));
            Assert.True(exit == 0, $"fleet {command} --help exit {exit}");
            Assert.Contains("Exit codes: 0 ok; 1", stdout);
        }
        var (_, explain, _) = Run(new[] { "explain", "--help" });
        foreach (var option in new[] { "--device", "--precision", "float16", "bfloat16", "--delta-threshold", "--relative-delta-threshold", "[default: centered-logit]", "[default: 50]" })
            Assert.Contains(option, explain);
        var (_, submit, _) = Run(new[] { "submit", "--help" });
        foreach (var option in new[] { "--job-id", "--connect-timeout", "[default: 30]", "--timeout", "--no-wait" })
            Assert.Contains(option, submit);
        Assert.DoesNotContain("--html", submit);
        var (versionExit, version, _) = Run(new[] { "--version" });
        Assert.Equal(0, versionExit);
        Assert.Matches(@"^\d+\.\d+\.\d+", version);
        var (completionExit, script, _) = Run(new[] { "completions", "bash" });
        Assert.Equal(0, completionExit);
        Assert.Contains("complete -o default -F _fleet_complete fleet", script);
    }

    [Fact]
    public void ATextThatStartsWithAtStaysAText()
    {
        var (exit, stdout, stderr) = Run(Args("explain --model {tiny} --json @notes.txt"));
        Assert.True(exit == 0, stderr);
        Assert.Equal("@notes.txt", JsonDocument.Parse(stdout.Trim()).RootElement.GetProperty("text").GetString());
    }

    [Fact]
    public void TerminalOutputEscapesControlCharactersAndJsonKeepsThem()
    {
        const string text = "evil\u001b]0;pwned\u0007 text\u001b[2J";
        var (exit, stdout, stderr) = Run(new[] { "explain", "--model", Tiny, text });
        Assert.True(exit == 0, stderr);
        Assert.DoesNotContain('\u001b', stdout);
        Assert.DoesNotContain('\u0007', stdout);
        Assert.Contains(@"evil\x1b]0;pwned\x07 text\x1b[2J", stdout);
        var (_, json, _) = Run(new[] { "explain", "--model", Tiny, "--json", text });
        Assert.Equal(text, JsonDocument.Parse(json.Trim()).RootElement.GetProperty("text").GetString());
    }

    [Fact]
    public void InputDashReadsStdinAndIdsAreFileLines()
    {
        var texts = TextInput.ReadFile("-", () => new MemoryStream(Encoding.UTF8.GetBytes("first\n\n  \nfourth\r\n")));
        Assert.Equal(new[] { ("1", "first", "stdin:1"), ("4", "fourth", "stdin:4") }, texts.Select(t => (t.Id, t.Text, t.Source)));
    }

    [Fact]
    public void OutIsReplacedOnlyOnSuccess()
    {
        Prepare();
        var path = Path.Combine(_dir, "existing.jsonl");
        using (var file = AtomicFile.Create(path, "--out"))
        {
            file.Writer.Write("half");
            Assert.Equal(Existing, File.ReadAllText(path)); // not yet
        }
        Assert.Equal(Existing, File.ReadAllText(path));       // disposed without commit: untouched
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
        AtomicFile.WriteAllText(path, "--out", "new\n");
        Assert.Equal("new\n", File.ReadAllText(path));
        Assert.Empty(Directory.GetFiles(_dir, ".*.tmp"));
    }

    [Fact]
    public void ANanModelGivesNonFiniteResultsNotPlausibleNumbers()
    {
        var nan = NanModel.Create(_dir);
        var (exit, stdout, stderr) = Run(new[] { "explain", "--model", nan, "--json", "hello", "world" });
        log.WriteLine(stdout + stderr);
        Assert.Equal(1, exit);
        Assert.DoesNotContain("NaN", stdout);
        var lines = stdout.Trim().Split('\n').Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(2, lines.Count);
        Assert.All(lines, l =>
        {
            Assert.Equal("non_finite", l.GetProperty("status").GetString());
            Assert.Equal(JsonValueKind.Null, l.GetProperty("f_x").ValueKind);
            Assert.Equal(JsonValueKind.Null, l.GetProperty("delta").ValueKind);
            Assert.True(l.GetProperty("over_threshold").GetBoolean());
        });
        Assert.Contains("non-finite", stderr);

        var (predictExit, predicted, predictErr) = Run(new[] { "predict", "--model", nan, "hello" });
        Assert.Equal(1, predictExit);
        Assert.StartsWith("non_finite", predicted.Trim());
        Assert.Contains("non-finite logits", predictErr);
    }

    [Fact]
    public void ANanModelCompletesInMemoryWithNonFiniteResults()
    {
        Prepare();
        var nan = NanModel.Create(_dir);
        var output = Path.Combine(_dir, "nan.jsonl");
        var watch = Stopwatch.StartNew();
        var (exit, _, stderr) = Run(new[] { "submit", "--transport", "inmemory", "--model", "nan", "--model-path", nan, "--input", Path.Combine(_dir, "in.txt"),
            "--out", output, "--timeout", "120" });
        log.WriteLine($"exit {exit} in {watch.Elapsed.TotalSeconds:0.0} s: {stderr}");
        Assert.Equal(1, exit);
        Assert.Contains("completed", stderr);
        Assert.Contains("non_finite", stderr);
        var lines = File.ReadAllLines(output).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(2, lines.Count);
        Assert.All(lines, l =>
        {
            Assert.Equal("non_finite", l.GetProperty("status").GetString());
            Assert.Equal(JsonValueKind.Null, l.GetProperty("f_x").ValueKind);
            Assert.True(l.GetProperty("over_threshold").GetBoolean());
        });
        Assert.DoesNotContain("NaN", File.ReadAllText(output));
    }

    [RabbitMqFact]
    public async Task ANanModelCompletesOverRabbitMqWithNonFiniteResults()
    {
        Prepare();
        var nan = NanModel.Create(_dir);
        var suffix = Guid.NewGuid().ToString("N")[..8];
        var config = Path.Combine(_dir, "fleet.json");
        File.WriteAllText(config, JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["Worker"] = new Dictionary<string, object> { ["JobQueue"] = $"cli-test-jobs-{suffix}", ["BatchQueue"] = $"cli-test-batches-{suffix}", ["HealthPort"] = 0 },
            ["Models"] = new Dictionary<string, object> { ["nan"] = new Dictionary<string, object> { ["Path"] = nan } },
        }));
        var url = Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")!;
        using var stopWorker = new CancellationTokenSource();
        var worker = Task.Run(() => FleetCli.Run(new[] { "worker", "--rabbitmq", url, "--config", config }, TextWriter.Null, TextWriter.Null, stopWorker.Token));
        try
        {
            var output = Path.Combine(_dir, "nan-rabbitmq.jsonl");
            var (exit, _, stderr) = Run(new[] { "submit", "--rabbitmq", url, "--config", config, "--model", "nan", "--input", Path.Combine(_dir, "in.txt"),
                "--out", output, "--timeout", "120" });
            log.WriteLine($"exit {exit}: {stderr}");
            Assert.Equal(1, exit);
            Assert.Contains("completed", stderr);
            var lines = File.ReadAllLines(output).Select(l => JsonDocument.Parse(l).RootElement).ToList();
            Assert.Equal(2, lines.Count);
            Assert.All(lines, l => Assert.Equal("non_finite", l.GetProperty("status").GetString()));
            Assert.All(lines, l => Assert.Equal(JsonValueKind.Null, l.GetProperty("delta").ValueKind));
        }
        finally
        {
            stopWorker.Cancel();
            await worker.WaitAsync(TimeSpan.FromSeconds(60));
            await DeleteQueues($"cli-test-jobs-{suffix}", $"cli-test-batches-{suffix}");
        }
    }

    private static string Tiny => Path.Combine(TestEnvironment.RepoRoot, "tests", "fixtures", "reference", "tiny-bert-L1");

    private void Prepare()
    {
        File.WriteAllText(Path.Combine(_dir, "existing.jsonl"), Existing);
        File.WriteAllText(Path.Combine(_dir, "in.txt"), "hello\nworld\n");
        File.WriteAllBytes(Path.Combine(_dir, "binary.txt"), new byte[] { (byte)'h', (byte)'e', (byte)'l', (byte)'l', (byte)'o', 0, 1, 2, 0xFF });
        File.WriteAllBytes(Path.Combine(_dir, "latin1.txt"), Encoding.Latin1.GetBytes("hello\nCaf\u00e9 au lait\n"));
        File.WriteAllText(Path.Combine(_dir, "nul.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"\\u0000\\u0000\"}\n");
        File.WriteAllText(Path.Combine(_dir, "gaps.jsonl"), "{\"text\": \"one\"}\n\n\n{\"text\": \"four\"}\n{broken\n");
        Directory.CreateDirectory(Path.Combine(_dir, "no-model"));
        File.WriteAllText(Path.Combine(_dir, "small-limit.json"), "{\"Limits\": {\"MaxMessageBytes\": 100}}");
    }

    private string[] Args(string command)
    {
        // Root may write anywhere but /proc; others cannot write into a directory without write permission.
        string readOnly = "/proc";
        if (Environment.UserName != "root" && !OperatingSystem.IsWindows())
        {
            readOnly = Path.Combine(_dir, "readonly");
            Directory.CreateDirectory(readOnly);
            File.SetUnixFileMode(readOnly, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        }
        return command.Replace("{dir}", _dir).Replace("{tiny}", Tiny).Replace("{readonly}", readOnly).Split(' ');
    }

    private static (int Exit, string Stdout, string Stderr) Run(string[] args)
    {
        TestEnvironment.Init();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = FleetCli.Run(args, stdout, stderr, CancellationToken.None);
        return (exit, stdout.ToString(), stderr.ToString());
    }
}

/// <summary>A fact that needs the broker of FLEET_TEST_RABBITMQ (.ci/services/rabbitmq.sh starts one and prints it).</summary>
public sealed class RabbitMqFactAttribute : FactAttribute
{
    public RabbitMqFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")))
            Skip = "no broker: FLEET_TEST_RABBITMQ is not set (eval \"$(.ci/services/rabbitmq.sh | tail -n 1)\")";
    }
}

/// <summary>A copy of the tiny BERT whose classifier weights are NaN: every logit is NaN.</summary>
public static class NanModel
{
    public static string Create(string parent)
    {
        var source = Path.Combine(TestEnvironment.RepoRoot, "tests", "fixtures", "reference", "tiny-bert-L1");
        var dir = Path.Combine(parent, "nan-model");
        if (Directory.Exists(dir)) return dir;
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        var path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength));
        var offsets = header.RootElement.GetProperty("classifier.weight").GetProperty("data_offsets");
        long start = 8 + headerLength + offsets[0].GetInt64(), end = 8 + headerLength + offsets[1].GetInt64();
        for (long i = start; i < end; i += 4) BitConverter.TryWriteBytes(bytes.AsSpan((int)i, 4), float.NaN);
        File.WriteAllBytes(path, bytes);
        return dir;
    }
}
