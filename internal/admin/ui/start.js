Console.start();
