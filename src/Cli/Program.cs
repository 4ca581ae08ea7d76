using AttributionFleet.Cli.Parsing;
using AttributionFleet.Engine;

// Under tcmalloc when it is installed (same process, re-executed with it preloaded): see NativeAllocator.
NativeAllocator.PreloadOrContinue();

return FleetCli.Run(args, Console.Out, Console.Error);
