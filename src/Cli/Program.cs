using AttributionFleet.Cli;
using AttributionFleet.Cli.Commands;
using AttributionFleet.Engine;
using AttributionFleet.Engine.Attribution;

// Under tcmalloc when it is installed (same process, re-executed with it preloaded): see NativeAllocator.
NativeAllocator.PreloadOrContinue();

var commands = new Dictionary<string, (Func<string[], TextWriter, int> Run, string Usage)>
{
    ["predict"] = (PredictCommand.Run, PredictCommand.Usage),
    ["explain"] = (ExplainCommand.Run, ExplainCommand.Usage),
    ["import-onnx"] = (ImportOnnxCommand.Run, ImportOnnxCommand.Usage),
    ["train-head"] = (TrainHeadCommand.Run, TrainHeadCommand.Usage),
    ["train-default"] = (TrainDefaultCommand.Run, TrainDefaultCommand.Usage),
    ["bench"] = (BenchCommand.Run, BenchCommand.Usage),
    ["submit"] = (SubmitCommand.Run, SubmitCommand.Usage),
    ["results"] = (ResultsCommand.Run, ResultsCommand.Usage),
    ["worker"] = (WorkerCommand.Run, WorkerCommand.Usage),
};

if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    Console.WriteLine("fleet: explain text classifiers with exact DeepLift\n");
    foreach (var (_, (_, usage)) in commands) Console.WriteLine("  " + usage.Replace("\n", "\n  ") + "\n");
    return args.Length == 0 ? 2 : 0;
}
if (!commands.TryGetValue(args[0], out var command))
{
    Console.Error.WriteLine($"fleet: unknown command '{args[0]}'; commands: {string.Join(", ", commands.Keys)}");
    return 2;
}
try
{
    EngineRuntime.Configure();
    return command.Run(args[1..], Console.Out);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"fleet {args[0]}: {e.Message}\nusage: {command.Usage}");
    return 2;
}
catch (AttributionRequestException e)
{
    Console.Error.WriteLine($"fleet {args[0]}: invalid {e.Field}: {e.Message}");
    return 2;
}
catch (ModelLoadException e)
{
    Console.Error.WriteLine($"fleet {args[0]}: {e.Message}");
    return 1;
}
